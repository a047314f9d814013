"""What runs train.py and eval.py: the fit and evaluation procedures, the run's folder, resume, callbacks, loggers,
W&B, config checks, and reports over multiruns."""
