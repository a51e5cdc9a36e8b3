"""The `mdrec` command."""

from __future__ import annotations

import os
import sys
import traceback

import click

from mdrec import __version__
from mdrec.errors import MdrecError, one_line

CONFIG_ARG = click.argument("config", type=click.Path(dir_okay=False))
RUN_DIR_OPT = click.option(
    "--run-dir",
    metavar="DIR",
    help="Run directory, a local path or s3://bucket/prefix (default: run_dir from the config, else runs/<name>).",
)
SET_OPT = click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override a config value, e.g. --set prepare.kcore=5 (repeatable; VALUE is read as YAML).",
)
FORCE_OPT = click.option("--force", is_flag=True, help="Redo the stage even if its committed output is current.")
ADDRESS_OPT = click.option(
    "--address",
    envvar=["RAY_API_SERVER_ADDRESS", "RAY_ADDRESS"],
    show_envvar=True,
    metavar="URL",
    help="The cluster's job API, e.g. http://HEAD:8265 (default: $RAY_API_SERVER_ADDRESS, else $RAY_ADDRESS).",
)
# The stages by name, not imported from mdrec.pipeline: that import costs every `mdrec` command
# half a second. tests/unit/test_jobs.py keeps the two lists equal.
UNTIL_OPT = click.option(
    "--until",
    type=click.Choice(["prepare", "generate", "filter", "train", "evaluate", "report"]),
    help="Stop after this stage (e.g. generate on a GPU cluster, train later); a later run goes on from it.",
)
JOB_ARG = click.argument("job_id", metavar="JOB")
JOB_RUN_DIR_OPT = click.option(
    "--run-dir",
    metavar="DIR",
    help="Run directory, s3://bucket/prefix or an absolute path every node mounts (default: run_dir from the config).",
)


def _log(message: str) -> None:
    click.echo(message, err=True)


def _load(config: str, overrides: tuple[str, ...], run_dir: str | None):
    from mdrec.config import load_config

    cfg = load_config(config, list(overrides))
    if run_dir:
        cfg.run_dir = run_dir
    return cfg


def stage_options(command):
    """The arguments every stage command takes: CONFIG, --run-dir, --set, --force."""
    for option in (FORCE_OPT, SET_OPT, RUN_DIR_OPT, CONFIG_ARG):
        command = option(command)
    return command


def _run_stages(config: str, run_dir: str | None, overrides: tuple[str, ...], force: bool, names: list[str],
                force_only: list[str] | None = None) -> None:
    from mdrec.pipeline import run_stages

    cfg = _load(config, overrides, run_dir)
    run_stages(cfg, _open_run_dir(cfg), names, force=force, force_only=force_only, log=_log)


def _open_run_dir(cfg):
    from mdrec.config import dump_config
    from mdrec.storage import RunDir

    from mdrec.jobs import refuse_credentials_in

    refuse_credentials_in(cfg)  # before anything is written: config.yaml would hold it
    run = RunDir(cfg.resolved_run_dir())
    run.file("config.yaml").write_bytes(dump_config(cfg).encode())
    return run


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="mdrec")
@click.option("--debug", is_flag=True, help="Show the full traceback on errors.")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """mdrec: synthetic interactions for the cold domains of a multi-domain recommender, on Ray.

    Every stage reads and writes Parquet under one run directory and is skipped on re-run when
    its committed output is current for the same config and inputs.
    """
    ctx.obj = {"debug": debug}


@cli.command()
@stage_options
def prepare(config: str, run_dir: str | None, overrides: tuple[str, ...], force: bool) -> None:
    """Clean, index and split the data; draw evaluation candidates.

    Reads the source named in CONFIG (flat tables, Amazon raw files, or the generated world) and
    writes <run-dir>/prepared/: interactions, train, cases (with sampled negatives), items,
    users, domains and stats.json. Prints the domain table.
    """
    _run_stages(config, run_dir, overrides, force, ["prepare"])


@cli.command()
@stage_options
def generate(config: str, run_dir: str | None, overrides: tuple[str, ...], force: bool) -> None:
    """Write synthetic interactions for users of the target (cold) domains.

    Users are sharded on Ray Data; each selected user's context (recent history titles of every
    domain, mixed in time order, and target-domain candidates found by title similarity,
    popularity and, with candidates.cooccurring, cross-domain co-occurrence) goes to the backend
    in generate.backend: popularity, semantic (a sentence encoder), translator (a two-tower
    model), cooccurrence (votes of training users who share the user's source items) or vllm (an
    LLM that chooses or scores candidates, on engines held by Ray actors); the scoring ones take
    a popularity_prior. The diagnostic
    oracle (allow_oracle: true) writes the held-out users' own rows: the ceiling. Writes <run-dir>/synthetic/raw/ shard by shard (a re-run
    resumes) and <run-dir>/synthetic/generate_report.json; prints a table with a row per
    protocol and target domain.
    Runs `prepare` first when it is not current.
    """
    _run_stages(config, run_dir, overrides, force, ["prepare", "generate"], force_only=["generate"])


@cli.command("filter")
@stage_options
def filter_(config: str, run_dir: str | None, overrides: tuple[str, ...], force: bool) -> None:
    """Filter and denoise the synthetic interactions: the filters in filter.steps, in order.

    Runs on Ray tasks over the shards of <run-dir>/synthetic/raw/: validity, dedupe, seen (items
    already in the user's real history), min_score, top_k, teacher (a model trained on real data
    only scores every synthetic pair; the lowest share goes), popularity_cap and budget. Writes
    <run-dir>/synthetic/filtered/ (kept rows), synthetic/dropped/ (each dropped row with the
    filter that dropped it), synthetic/filter_report.json and synthetic/filter_scores.png (kept
    against dropped scores); prints what each filter dropped. Runs `prepare` and `generate`
    first when they are not current.
    """
    _run_stages(config, run_dir, overrides, force, ["prepare", "generate", "filter"], force_only=["filter"])


@cli.command()
@stage_options
def train(config: str, run_dir: str | None, overrides: tuple[str, ...], force: bool) -> None:
    """Train every model in CONFIG's `train.models` on Ray Train.

    One TorchTrainer run per model, protocol (train.protocols), variant (train.variants: real
    rows only, + synthetic/raw, + synthetic/filtered) under each synthetic mode
    (train.synthetic.modes: label = weighted positives, the run `raw`; context = read, never
    predicted, `raw+context`; pretrain = positives for the first epochs, `raw+pretrain`;
    pairwise = a BPR term on (picked, rejected) pairs, `raw+pairwise`; soft = positives
    weighted by the backend's calibrated score, `raw+soft`; train.synthetic.denoise: tce drops
    the largest-loss synthetic positives, arms `+tce`; synthetic rows never enter validation)
    and seed (train.seeds), with
    train.num_workers workers (DDP), a checkpoint per epoch under <run-dir>/.train/, early
    stopping on a validation metric, and resume from the last checkpoint after a failure or a
    re-run. Commits <run-dir>/models/<model>/<variant>/<protocol>/seed-<n>/ (model.pt,
    metrics.json) and prints each run's best validation epoch; each epoch prints a progress line.
    """
    _run_stages(config, run_dir, overrides, force, ["train"])


@cli.command()
@stage_options
def evaluate(config: str, run_dir: str | None, overrides: tuple[str, ...], force: bool) -> None:
    """Score the test cases with every trained run in CONFIG and compute metrics per domain.

    Cases of the protocol each model was trained for are scored by Ray Data actors
    (evaluate.num_actors), every variant on the same stored candidates; AUC, GAUC, logloss,
    HR@K, NDCG@K, coverage@K and Gini of exposure (K = 5, 10, 20), and the Gini of per-user
    NDCG@10 are committed to <run-dir>/evaluation/<model>/<variant>/<protocol>/seed-<n>/
    (metrics.json; cases.parquet with each case's NDCG@10, HR@10 and AUC for paired tests) and
    printed. With evaluate.full_catalog, a sample of cases is also ranked against the whole
    domain (full_*).
    """
    _run_stages(config, run_dir, overrides, force, ["evaluate"])


@cli.command()
@stage_options
@UNTIL_OPT
def run(config: str, run_dir: str | None, overrides: tuple[str, ...], force: bool, until: str | None) -> None:
    """Run the whole pipeline for CONFIG, resuming from committed stages.

    prepare -> generate -> filter -> train -> evaluate -> report. generate and filter run only
    when train.variants has an augmented variant (raw, filtered). A killed run re-run with the
    same config goes on from the last committed stage (and training from its last checkpoint).
    """
    from mdrec.pipeline import run_order, run_stages

    cfg = _load(config, overrides, run_dir)
    stages = run_order(cfg, until)  # a bad --until fails before anything is written
    run_stages(cfg, _open_run_dir(cfg), stages, force=force, log=_log)


@cli.command()
@stage_options
@click.option("--phase", type=click.Choice(["validate", "test", "all"]), default="all", show_default=True,
              help="validate: generate with every backend, train every arm with the validation seeds and choose; "
              "test: train and score the choice (needs a validation pass); all: both.")
def sweep(config: str, run_dir: str | None, overrides: tuple[str, ...], force: bool, phase: str) -> None:
    """Choose backend x training mode on validation, then score only the choice on test.

    CONFIG's `sweep` section names the backends (each writes its own rows, in
    <run-dir>/backends/<name>/ beside a copy of the prepared data), the modes and denoising to
    try, and the validation and test seeds. The validation pass trains every model of
    sweep.models under real-only and every backend x mode with the validation seeds, and picks
    per protocol and model the arm with the best cold-domain validation value among those above
    real-only by more than sweep.min_gain in every validation seed (real-only wins ties; an arm
    that costs the other domains more than sweep.max_other_drop is not picked; oracle backends
    are ceilings, never picked). It commits <run-dir>/sweep/validation/ (validation.csv,
    arms.csv, picks.json, report.md). The test pass trains real-only, each pick and the oracle's
    best arm with the test seeds, scores them on test and commits <run-dir>/sweep/test/
    (report.md, summary.csv, comparison.csv, lift_by_rows.csv): the validation table, the picks
    and why, each pick against real-only per domain (paired t-test over cases, Holm, seeds
    better), and each arm's lift split by whether its backend wrote the case's answer.
    """
    from mdrec.sweep import plan
    from mdrec.sweep.report import headline
    from mdrec.sweep.run import Phase, run_sweep

    cfg = _load(config, overrides, run_dir)
    plan.sweep_of(cfg)  # no sweep section: one line, before anything is written
    out = run_sweep(cfg, _open_run_dir(cfg), phase=Phase(phase), force=force, log=_log)
    if "validate" in out:
        from mdrec.sweep.report import picks_table

        click.echo(picks_table(out["validate"]["picks"]))
    if "test" in out:
        comparison = out["test"]["comparison"]
        for line in headline(comparison) if not comparison.empty else ["nothing to compare on test"]:
            click.echo(line)


@cli.command()
@click.argument("run_dir", metavar="RUN_DIR")
def report(run_dir: str) -> None:
    """Write <RUN_DIR>/report/ from the committed metrics: report.md, summary.csv and PNG plots.

    Each augmented variant against real-only per domain (difference, paired t-test over the
    test cases, Holm-adjusted, seeds better, fairness side by side), one Markdown table per
    domain (protocol x model x variant, mean ± std over seeds), the time of a training epoch
    next to the time to score the test cases, and plots. RUN_DIR may be a local path or
    s3://bucket/prefix.
    """
    from mdrec.report.stage import build_report
    from mdrec.storage import RunDir

    result = build_report(RunDir(run_dir), log=_log)
    click.echo(result["report"])


@cli.command()
@CONFIG_ARG
@ADDRESS_OPT
@JOB_RUN_DIR_OPT
@SET_OPT
@UNTIL_OPT
@click.option("--env", "env_vars", multiple=True, metavar="NAME=VALUE",
              help="An environment variable for every process of the job, e.g. --env AWS_MAX_ATTEMPTS=20 "
                   "(repeatable; never a credential).")
@click.option("--follow/--no-follow", default=True, show_default=True,
              help="Stream the job's logs until it ends and exit with its outcome.")
@click.option("--job-id", metavar="ID", help="The job's submission id (default: one Ray makes up).")
def submit(config: str, address: str | None, run_dir: str | None, overrides: tuple[str, ...], until: str | None,
           env_vars: tuple[str, ...], follow: bool, job_id: str | None) -> None:
    """Run the pipeline for CONFIG as a job on a Ray cluster: `mdrec run` on the cluster.

    Sends this checkout (without what cluster/runtime_env.yaml excludes: .venv, runs, .git,
    caches) with CONFIG copied into it to the job API at --address; the job runs `python
    jobs/pipeline.py --config CONFIG --run-dir DIR [--set ...] [--until STAGE]`. CONFIG and the
    overrides are checked here first. Prints the job id as the first line of stdout; with --follow, then the
    job's logs, and exits 0 if it SUCCEEDED, 1 if it FAILED or was STOPPED (Ctrl-C stops
    following, not the job).

    No credentials are sent: the nodes read S3 with their own (instance role, IRSA, or their
    environment). A config key that looks like one, or a job that would carry the value of a
    credential variable of this shell, is refused.
    """
    from mdrec import jobs

    client, job = jobs.submit(address, config, run_dir, overrides, job_id, until=until, env_vars=env_vars, log=_log)
    click.echo(job)
    if not follow:
        _log(f"follow it with: mdrec logs {job} --follow --address {address}")
        return
    _follow(client, address, job)


@cli.command()
@JOB_ARG
@ADDRESS_OPT
def status(job_id: str, address: str | None) -> None:
    """Print the status of JOB (PENDING, RUNNING, SUCCEEDED, FAILED or STOPPED), then its message.

    Exits 0 whatever the status: the first line of stdout is it. `mdrec logs JOB` shows why a
    job failed.
    """
    from mdrec import jobs

    info = jobs.job_info(jobs.connect(address), address, job_id)
    click.echo(info.status.value)
    if jobs.headline(info.message):
        click.echo(jobs.headline(info.message))


@cli.command()
@JOB_ARG
@ADDRESS_OPT
@click.option("--follow", is_flag=True, help="Stream the logs until JOB ends and exit with its outcome (0 SUCCEEDED).")
def logs(job_id: str, address: str | None, follow: bool) -> None:
    """Print the logs of JOB (its driver's stdout and stderr) so far, or follow them."""
    from mdrec import jobs

    client = jobs.connect(address)
    if follow:
        _follow(client, address, job_id)
    else:
        click.echo(jobs.job_logs(client, address, job_id), nl=False)


def _follow(client, address: str, job_id: str) -> None:
    from mdrec import jobs

    try:
        info = jobs.follow(client, address, job_id, lambda chunk: click.echo(chunk, nl=False))
    except KeyboardInterrupt:
        _log(f"stopped following; job {job_id} goes on (mdrec status {job_id}; `ray job stop {job_id}` stops it)")
        sys.exit(130)
    status = info.status.value
    why = jobs.headline(info.message) if status != "SUCCEEDED" else ""
    _log(f"job {job_id} {status}" + (f": {why}" if why else ""))
    sys.exit(jobs.exit_code(status))


@click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--config", "config", required=True, type=click.Path(dir_okay=False), help="The config file.")
@RUN_DIR_OPT
@SET_OPT
@FORCE_OPT
@UNTIL_OPT
@click.option("--debug", is_flag=True, help="Show the full traceback on errors.")
def job_entrypoint(config: str, run_dir: str | None, overrides: tuple[str, ...], force: bool, until: str | None,
                   debug: bool) -> None:
    """`mdrec run` as a Ray job (jobs/pipeline.py): joins the cluster in RAY_ADDRESS, set by Ray.

    The run directory's config.yaml gets no credential: a config key that looks like one is refused.
    """
    import mdrec
    from mdrec.pipeline import run_order, run_stages

    cfg = _load(config, overrides, run_dir)
    where = os.path.dirname(mdrec.__file__)
    _log(f"mdrec {__version__} from {where}; Ray at {os.environ.get('RAY_ADDRESS') or 'a new local Ray'}")
    stages = run_order(cfg, until)
    run_stages(cfg, _open_run_dir(cfg), stages, force=force, log=_log)


@cli.command("config")
@CONFIG_ARG
@SET_OPT
def show_config(config: str, overrides: tuple[str, ...]) -> None:
    """Validate CONFIG and print it resolved, with every default filled in."""
    from mdrec.config import dump_config

    click.echo(dump_config(_load(config, overrides, None)), nl=False)


@cli.group("llm")
def llm() -> None:
    """Models shipped inside PyPI packages: `generate.backend.model: packaged:NAME` needs no model hub."""


@llm.command("list")
@click.option("--cache", metavar="DIR", help="The local model cache (default: $MDREC_MODEL_CACHE, else ~/.cache/mdrec/models).")
def llm_list(cache: str | None) -> None:
    """List the packaged models: kind, format, package, licence, size, installed, prepared folder."""
    from mdrec.packaged.cache import prepared_path
    from mdrec.packaged.registry import models
    from mdrec.text_table import text_table

    rows = []
    for m in models():
        installed = m.installed_version()
        rows.append([m.name, m.kind.value, m.format.value, f"{m.package}=={m.version}", m.licence, f"{m.size_mb} MB",
                     "yes" if installed == m.version else (f"yes ({installed})" if installed else "no"),
                     prepared_path(m.name, cache) or "-"])
    click.echo(text_table(["name", "kind", "format", "package", "licence", "size", "installed", "prepared"], rows, left=8))


@llm.command("prepare")
@click.argument("name")
@click.option("--cache", metavar="DIR|s3://...",
              help="Where the converted folder goes: a local folder or an s3:// prefix (uploaded there after a local "
                   "conversion) (default: $MDREC_MODEL_CACHE, else ~/.cache/mdrec/models).")
def llm_prepare(name: str, cache: str | None) -> None:
    """Make packaged model NAME ready to load (converted once per content), print its folder or URI.

    Progress goes to stderr, the path alone to stdout: `MODEL=$(mdrec llm prepare NAME)`.
    """
    from mdrec.packaged.cache import prepare_packaged

    click.echo(prepare_packaged(name, cache, log=_log))


def main(argv: list[str] | None = None, command: click.Command | None = None, prog_name: str = "mdrec") -> None:
    """Entry point: user errors print one line and exit 2; --debug shows tracebacks.

    COMMAND (default: the `mdrec` group) lets jobs/pipeline.py share this error handling.
    """
    debug = "--debug" in (argv if argv is not None else sys.argv[1:]) or bool(os.environ.get("MDREC_DEBUG"))
    try:
        (command or cli).main(args=argv, prog_name=prog_name, standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except MdrecError as e:
        if debug:
            traceback.print_exc()
        click.echo(f"error: {one_line(e)}", err=True)
        sys.exit(e.exit_code)
    except Exception as e:  # noqa: BLE001 - last resort: still one line, with the type
        cause = _user_error_inside(e)
        if debug:
            traceback.print_exc()
        if cause is not None:
            click.echo(f"error: {one_line(cause)}", err=True)
            sys.exit(cause.exit_code)
        click.echo(f"error: {type(e).__name__}: {one_line(e)[:500]} (run with --debug for the traceback)", err=True)
        sys.exit(1)


def _user_error_inside(e: BaseException) -> MdrecError | None:
    """An MdrecError raised inside a Ray task arrives wrapped; find it."""
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, MdrecError):
            return e
        e = getattr(e, "cause", None) or e.__cause__ or e.__context__
    return None


if __name__ == "__main__":
    main()
