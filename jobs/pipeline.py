"""Entry point of the mdrec Ray job: `mdrec run` on the cluster the job lands on.

    ray job submit --address http://HEAD:8265 --runtime-env cluster/runtime_env.yaml -- \\
        python jobs/pipeline.py --config configs/demo.yaml --run-dir s3://bucket/run [--set KEY=VALUE ...]

`mdrec submit` sends this same command. Options are those of `mdrec run`, with the config as
--config. Ray is joined through RAY_ADDRESS, which the job supervisor sets. The folder above this
file (the job's working_dir) goes first on sys.path, so the job runs the mdrec that was shipped
with it, not one installed on the cluster. Bad input: one line on stderr, exit status 2.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mdrec.cli import job_entrypoint, main  # noqa: E402

if __name__ == "__main__":
    main(sys.argv[1:], command=job_entrypoint, prog_name="jobs/pipeline.py")
