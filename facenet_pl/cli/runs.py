"""``facenet-pl summary`` and ``report``: tables and plots over a Hydra multirun."""

from __future__ import annotations

from facenet_pl.cli.common import (
    CLIError,
)


def cmd_summary(a) -> None:
    from facenet_pl.run.summary import summarize

    print(summarize(a.folder, a.sort, csv_path=a.csv))


def cmd_report(a) -> None:
    from facenet_pl.run.report import make_report

    try:
        rep = make_report(a.folder, a.metric, a.x, a.out, a.force, a.wandb)
    except FileExistsError as e:
        raise CLIError(str(e)) from None
    print(rep.markdown)
    print("wrote " + ", ".join(str(f) for f in rep.files.values()))
