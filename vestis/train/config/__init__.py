"""Training configuration: one YAML file per experiment, loaded into dataclasses.

Every config declares what it trains with ``kind:`` (:data:`RUN_KINDS`): ``embedding`` (an
embedding head on the frozen backbone's features, stage 1), ``finetune`` (the backbone tuned with
its head on images, stage 2), ``attributes`` (one embedding space per attribute) or ``joint`` (a
text-image space for search in words). :func:`load_config` parses each kind into its dataclass
(:class:`RunConfig`, :class:`AttributeRunConfig`, :class:`JointRunConfig`); ``vestis train``
dispatches on ``kind``.

Keys not given take the defaults below; ``--set section.key=value`` overrides any key after the
file is read (the value is parsed as YAML, so ``--set train.lr=3e-4``, ``--set head.kind=ce+triplet``
and ``--set data.labels=[articleType]`` all work). Unknown keys and badly typed values are refused
with a message that names the key, so a typo never trains silently with a default.

Relative paths in a config are relative to the working directory (run from the project root).
"""

from vestis.train.config.loading import apply_override, config_from_dict, load_config, read_yaml
from vestis.train.config.runs import (
    CONFIG_CLASSES,
    RUN_KINDS,
    AttributeModelConfig,
    AttributeRunConfig,
    JointRunConfig,
    RunConfig,
    TextSideConfig,
)
from vestis.train.config.sections import (
    CE_KINDS,
    CLASS_INITS,
    CLASS_SAMPLINGS,
    CLASSIFIERS,
    GALLERIES,
    HEAD_KINDS,
    MINERS,
    QUERY_HALVES,
    SCHEDULES,
    SPLIT_NAMES,
    TRIPLET_KINDS,
    DataConfig,
    EvalConfig,
    ExportConfig,
    FinetuneConfig,
    HeadConfig,
    LrFinderConfig,
    TrainConfig,
    TransferSetConfig,
    check_anchor,
    check_cross_set,
    check_split_usage,
)

__all__ = [
    "AttributeModelConfig",
    "AttributeRunConfig",
    "CE_KINDS",
    "CLASSIFIERS",
    "CLASS_INITS",
    "CLASS_SAMPLINGS",
    "CONFIG_CLASSES",
    "DataConfig",
    "EvalConfig",
    "ExportConfig",
    "FinetuneConfig",
    "GALLERIES",
    "HEAD_KINDS",
    "HeadConfig",
    "JointRunConfig",
    "LrFinderConfig",
    "MINERS",
    "QUERY_HALVES",
    "RUN_KINDS",
    "RunConfig",
    "SCHEDULES",
    "SPLIT_NAMES",
    "TRIPLET_KINDS",
    "TextSideConfig",
    "TrainConfig",
    "TransferSetConfig",
    "apply_override",
    "check_anchor",
    "check_cross_set",
    "check_split_usage",
    "config_from_dict",
    "load_config",
    "read_yaml",
]
