"""Entry point of one training run submitted as a Ray job: ``rectune train`` on the job's cluster.

    ray job submit --address http://127.0.0.1:8265 --working-dir . --runtime-env jobs/runtime_env.yaml \\
        -- python jobs/train.py --data /mnt/shared/rectune/data/synth --workers 2 --out /mnt/shared/rectune/runs/r1

It takes the options of ``rectune train`` (``python jobs/train.py --help``). ``--address`` defaults to
``auto``: inside a Ray job the driver joins the cluster the job was submitted to. ``--data`` and
``--out`` must name folders that every node reads (shared storage); the working dir carries the code.
"""

import sys
from pathlib import Path

# The submitted working dir is the repository: import rectune from its platform/ folder, installed or not.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "platform"))

from rectune.cli import main  # noqa: E402

if __name__ == "__main__":
    # An --address given on the command line comes later and wins (click keeps an option's last value).
    main(args=["train", "--address", "auto", *sys.argv[1:]], prog_name="rectune")
