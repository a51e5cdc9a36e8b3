"""Entry point for `ray job submit`: run the mdrec pipeline on the cluster the job lands on.

    ray job submit --working-dir . -- python jobs/run_pipeline.py CONFIG --run-dir s3://bucket/run

Arguments are those of `mdrec run`. Ray is joined through RAY_ADDRESS, which the job
supervisor sets, so the same code runs on a laptop and on a cluster.
"""

import sys

from mdrec.cli import main

if __name__ == "__main__":
    main(["run", *sys.argv[1:]])
