"""Entry point of a tuning campaign submitted as a Ray job: ``rectune tune`` on the job's cluster.

    ray job submit --address http://127.0.0.1:8265 --working-dir . --runtime-env jobs/runtime_env.yaml \\
        -- python jobs/tune.py --data /mnt/shared/rectune/data/synth --space search_spaces/quick.yaml --name c1

It takes the options of ``rectune tune`` (``python jobs/tune.py --help``). ``--address`` defaults to
``auto``: inside a Ray job the driver joins the cluster the job was submitted to. ``--data`` must name
a folder that every node reads (shared storage); the working dir carries the code, not the data.
"""

import sys
from pathlib import Path

# The submitted working dir is the repository: import rectune from its platform/ folder, installed or not.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "platform"))

from rectune.cli import main  # noqa: E402

if __name__ == "__main__":
    # An --address given on the command line comes later and wins (click keeps an option's last value).
    # Standalone mode: click exits with the command's own exit code (2 for a rectune error, 1 for an
    # unfinished campaign), which `ray job status` reports as FAILED.
    main(args=["tune", "--address", "auto", *sys.argv[1:]], prog_name="rectune")
