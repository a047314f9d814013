"""The LightningModule (FaceNet's training step: embed, mine, loss) and what the step needs: guards, the LR schedule,
checkpoint writing."""
