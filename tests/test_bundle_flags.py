"""Bundle config conventions, checked on every config of every bundle without training.

* Boolean flags: ``python -m monai.bundle run ... --amp false`` passes the *string* ``"false"``. Every boolean config
  id (found automatically: a JSON ``true``/``false`` default, or ``amp``) must read ``true/True/false/False`` as the
  boolean wherever it is consumed, and reject anything else with an error naming the id.
* Rank-0-only handlers: under ``multi_gpu_train.json`` each handler is disabled on ranks > 0 by its own
  ``"_disabled_": "@is_not_rank0"``, never by its position in the handler list, so handlers added by other configs
  (``kan_tools.json``) keep running where they must.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Dict, Iterator, List, Tuple

import ignite.distributed
import pytest
import torch
from monai.bundle import ConfigParser

from helpers import error_chain

REPO = Path(__file__).resolve().parents[1]
BUNDLES = REPO / "bundles"
SEG = ("kmunet_2d_segmentation", "kmunet_3d_segmentation")

# how the configs of each bundle are run together (first file: the base config, then the overlays)
COMBOS: Dict[str, List[Tuple[str, ...]]] = {
    **{b: [("train",), ("train", "kan_tools"), ("train", "multi_gpu_train"), ("train", "kan_tools", "multi_gpu_train"),
           ("inference",), ("inference", "evaluate")] for b in SEG},
    "kae_denoising": [("train",), ("inference",), ("evaluate",), ("inference", "evaluate")],
}
ALWAYS_BOOLEAN = ("amp",)  # boolean ids whose default is an expression ("$torch.cuda.is_available()")
TRUE_STRINGS, FALSE_STRINGS = ("true", "True"), ("false", "False")


def _files(bundle: str, names: Tuple[str, ...]) -> List[str]:
    return [str(BUNDLES / bundle / "configs" / f"{n}.json") for n in names]


def _parser(bundle: str, names: Tuple[str, ...], tmp_path: Path, **override: Any) -> ConfigParser:
    parser = ConfigParser()
    parser.read_config(_files(bundle, names))
    parser["bundle_root"] = str(tmp_path)  # outputs (checked or created by the consumers) go to the test folder
    for k, v in override.items():
        parser[k] = v
    return parser


def _leaves(config: Any, path: Tuple[str, ...] = ()) -> Iterator[Tuple[str, Any]]:
    if isinstance(config, dict):
        for k, v in config.items():
            yield from _leaves(v, path + (str(k),))
    elif isinstance(config, list):
        for i, v in enumerate(config):
            yield from _leaves(v, path + (str(i),))
    else:
        yield "#".join(path), config


def boolean_ids(config: Dict[str, Any]) -> List[str]:
    """Top-level ids with a JSON boolean default, and the ids in ``ALWAYS_BOOLEAN``."""
    return sorted(k for k, v in config.items() if isinstance(v, bool) or k in ALWAYS_BOOLEAN)


def consumers(config: Dict[str, Any], name: str) -> List[str]:
    """Ids of the config items whose value refers to ``@name`` (not ``@name_other`` nor ``@name#sub``)."""
    pattern = re.compile(rf"[@%]{re.escape(name)}\b(?!#)")
    return [i for i, v in _leaves(config) if i != name and isinstance(v, str) and pattern.search(v)]


def _cases():
    for bundle, combos in COMBOS.items():
        for names in combos:
            yield pytest.param(bundle, names, id=f"{bundle}:{'+'.join(names)}")


def test_every_config_file_is_covered():
    """A new config file must be added to COMBOS (so that its flags and handlers are checked)."""
    for bundle in sorted(p.name for p in BUNDLES.iterdir() if (p / "configs").is_dir()):
        files = {p.stem for p in (BUNDLES / bundle / "configs").glob("*.json")} - {"metadata"}
        covered = {n for combo in COMBOS.get(bundle, []) for n in combo}
        assert files <= covered, f"{bundle}: {sorted(files - covered)} not in COMBOS"


@pytest.mark.parametrize("bundle,names", list(_cases()))
def test_boolean_flags_parse_where_consumed(bundle, names, tmp_path):
    config = _parser(bundle, names, tmp_path).get()
    flags = boolean_ids(config)
    assert "amp" in flags and consumers(config, "amp")
    for flag in flags:
        for item in consumers(config, flag):  # none: a flag of the base config that this combination does not use
            expected = {value: _parser(bundle, names, tmp_path, **{flag: value}).get_parsed_content(item)
                        for value in (True, False)}
            for strings, value in ((TRUE_STRINGS, True), (FALSE_STRINGS, False)):
                for s in strings:
                    got = _parser(bundle, names, tmp_path, **{flag: s}).get_parsed_content(item)
                    assert got == expected[value], f"--{flag} {s}: {item} got {got!r}, expected {expected[value]!r}"
            with pytest.raises(Exception) as err:
                _parser(bundle, names, tmp_path, **{flag: "maybe"}).get_parsed_content(item)
            chain = error_chain(err.value)
            assert f"ValueError: `{flag}` must be true or false, got 'maybe'" in chain, (item, chain)


def test_amp_default_follows_cuda():
    for bundle in SEG:
        parser = ConfigParser()
        parser.read_config(_files(bundle, ("train",)))
        parser["bundle_root"] = "."
        assert parser.get_parsed_content("train#trainer#amp") is torch.cuda.is_available()
        assert parser.get_parsed_content("validate#evaluator#amp") is torch.cuda.is_available()


def test_consumer_discovery():
    config = {"amp": True, "amp_scale": 2, "a": {"b": ["$f(@amp)", "@amp_scale", "@amp#x"]}, "c": "@amp"}
    assert boolean_ids(config) == ["amp"]
    assert consumers(config, "amp") == ["a#b#0", "c"]


# ---------------------------------------------------------------------------------------------------------------
# handlers per rank

# handler classes that must run on every rank (collective work, shared state) and those only rank 0 needs; the
# checkpoint savers run everywhere (every rank keeps the best score) and write on rank 0 only (AtomicDiskSaver)
ALL_RANKS = {"LrScheduleHandler", "ValidationHandler", "FinalValidation", "CheckedCheckpointLoader", "KANGridHandler",
             "AtomicCheckpointSaver"}
RANK0_ONLY = {"StatsHandler", "TensorBoardStatsHandler", "ProgressBar", "KANSplineTensorBoardHandler"}


def _handler_names(parser: ConfigParser, list_id: str) -> List[str]:
    return [type(h).__name__ for h in parser.get_parsed_content(list_id)]


def _configured_names(parser: ConfigParser, list_id: str) -> List[str]:
    names = []
    for h in parser[list_id]:
        target = h["_target_"] if isinstance(h, dict) else parser[h.lstrip("@")]["_target_"]
        names.append(target.rsplit(".", 1)[-1])
    return names


def _rank_parser(bundle: str, names: Tuple[str, ...], tmp_path: Path) -> ConfigParser:
    small = {"network_def#channels": [4, 8, 8, 16]} if bundle in SEG else {}
    return _parser(bundle, names, tmp_path, **small, network="$@network_def", log_dir=str(tmp_path / "runs"),
                   ckpt_dir=str(tmp_path / "models"), **{"validate#evaluator": None})


@pytest.mark.parametrize("bundle,names", [
    *[(b, n) for b in SEG for n in (("train", "multi_gpu_train"), ("train", "kan_tools", "multi_gpu_train"))],
    *[(b, ("train",)) for b in (*SEG, "kae_denoising")],  # train.json alone, launched by torchrun
])
@pytest.mark.parametrize("rank", [0, 1])
def test_rank_zero_only_handlers(bundle, names, rank, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.distributed, "get_rank", lambda *a, **k: rank)
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
    monkeypatch.setattr(ignite.distributed, "get_rank", lambda: rank)  # the rank ignite's savers write on
    parser = _rank_parser(bundle, names, tmp_path)
    for list_id in ("train#handlers", "validate#handlers"):
        configured = _configured_names(parser, list_id)
        unknown = set(configured) - ALL_RANKS - RANK0_ONLY
        assert not unknown, f"decide whether {unknown} run on every rank or on rank 0 only"
        expected = configured if rank == 0 else [n for n in configured if n in ALL_RANKS]
        assert _handler_names(parser, list_id) == expected
    if "kan_tools" in names:
        assert "KANGridHandler" in _handler_names(parser, "train#handlers")  # the grid update runs on every rank
    assert (tmp_path / "models").is_dir() == (rank == 0)  # the savers of other ranks create nothing


def test_multi_gpu_handlers_need_a_process_group(tmp_path):
    """Under multi_gpu_train.json the rank is asked of torch.distributed, never assumed to be 0."""
    parser = _rank_parser("kmunet_2d_segmentation", ("train", "multi_gpu_train"), tmp_path)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        pytest.skip("a process group is initialized in this process")
    with pytest.raises(Exception):
        parser.get_parsed_content("is_not_rank0")
