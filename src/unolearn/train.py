"""The train stage: per-cluster experience modules as LoRA adapters.

- **Expert** (every cluster by default, as in the reference: a high-gap cluster's expert is validated
  and reported, though ``uno`` sends that cluster to its critic): TRL ``DPOTrainer`` with the sigmoid DPO loss plus an
  SFT loss on the chosen answer (``loss_type=["sigmoid", "sft"]``, weights 0.5/0.5 by default), on
  the cluster's preference pairs.
- **Critic** (every cluster by default, since a primary cluster may fail validation and fall back):
  TRL ``SFTTrainer`` teaching the model to write numbered revision rules for (query, first answer);
  the targets are the cluster's distilled feedback rules.

Both train a PEFT LoRA with an 80/20 train/validation split of the cluster's logs (seeded) and save
the adapter after every epoch under ``artifacts/modules/<module id>/epoch-<k>``. A module is recorded
in the workspace only after its training finished, so an interrupted run leaves no half module, and
a module with the same data and configuration is not trained twice. The same code runs on a CPU
(bf16 weights where the CPU computes bf16 natively, else fp32; gradient checkpointing) and on GPUs
(bf16 mixed precision, optional gradient checkpointing; several GPUs with ``accelerate launch``).
"""

from __future__ import annotations

import ctypes
import gc
import json
import math
import shutil
import sys
import time
import warnings
from collections import defaultdict
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from .base_model import cpu_bf16, gpu_bf16, resolve_base_model
from .children import child_pool
from .config import opt
from .errors import ConfigError, InputError, UnolearnError, one_line
from .executor import ExecutorConfig, run_jobs
from .plans import epoch_dir
from .profiles import PROFILE_NAMES, note, train_values
from .records import content_hash
from .store import Workspace
from .training_data import admitted, critic_rows, critic_splits, expert_rows, learning_rows, split_members

LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]

@dataclass
class TrainConfig:
    """Hyper-parameters of expert and critic training.

    Fields left unset (None) take their value from ``profile``: the paper's settings on a GPU, smaller
    ones on a CPU (:data:`unolearn.profiles.PROFILES`); call :meth:`resolved` for the values a run uses.
    """

    base_model: str | None = opt(None, "Hugging Face model folder to train on (default: the embedded "
                                       "model, converted for training once into the workspace).")
    profile: str = opt("auto", "Defaults of the unset fields: 'gpu' (the paper's), 'cpu' (a few minutes per cluster "
                               "on 2 cores), or 'auto' (gpu when CUDA is available); see unolearn.profiles.")
    epochs: int | None = opt(None, "Expert (DPO+SFT) epochs; an adapter is saved after each "
                                   f"({note('train', 'epochs')}).")
    critic_epochs: int | None = opt(None, f"Critic (SFT) epochs; an adapter is saved after each "
                                                 f"({note('train', 'critic_epochs')}).")
    learning_rate: float = opt(5e-4, "Peak learning rate (cosine schedule).")
    beta: float = opt(0.1, "DPO beta.")
    dpo_weight: float = opt(0.5, "Weight of the sigmoid DPO loss.")
    sft_weight: float = opt(0.5, "Weight of the SFT loss on the chosen answer.")
    lora_r: int | None = opt(None, f"LoRA rank ({note('train', 'lora_r')}).")
    lora_alpha: int | None = opt(None, f"LoRA alpha ({note('train', 'lora_alpha')}).")
    lora_dropout: float = opt(0.05, "LoRA dropout.")
    target_modules: list[str] = opt(LORA_TARGETS, "Modules that get LoRA weights (attention and MLP).")
    batch_size: int = opt(1, "Per-device batch size.")
    grad_accum: int | None = opt(None, f"Gradient accumulation steps ({note('train', 'grad_accum')}).")
    max_length: int | None = opt(None, f"Token limit of a training sequence, prompt + answer "
                                         f"({note('train', 'max_length')}); "
                                         "longer rows are cut, and a row whose prompt alone reaches it is left out.")
    val_fraction: float = opt(0.2, "Share of a cluster's logs held out for validation.")
    min_val_logs: int = opt(2, "At least this many of a cluster's logs with rules are held out for validation "
                               "once it has three times as many (select judges an expert on no fewer than its "
                               "min_val_items, 2: at 20%, a cluster of 7 would keep one item and never be judged).")
    critic_folds: int = opt(2, "Cross-fit each critic over this many folds of its cluster's logs with rules: a critic "
                               "trained without each fold is judged on it, so every log is a validation item once, "
                               "and the critic that serves trains on them all (about 2.5 times the critic's training "
                               "rows: all logs and each fold's rest, against 80%); "
                               "0 or 1: one critic with the held-out split, as the reference.")
    seed: int = opt(42, "Seed of the split and of training.")
    min_pairs: int | None = opt(None, f"Clusters with fewer training pairs get no expert "
                                      f"({note('train', 'min_pairs')}).")
    experts: str = opt("all", "Which clusters get an expert: all (as the reference; a high-gap cluster's expert is "
                              "validated and reported, not used by uno), primary (planned primary: less "
                              "training), none.")
    critics: str = opt("all", "Which clusters get a critic: all, reflective (planned reflective), none.")
    max_user_share: float = opt(0.2, "Most of a cluster's training logs one user may give (rounded up, and never "
                                     "fewer than 3 logs; logs without a user count as one user; no cap where no "
                                     "log names its user).")
    bf16: bool | None = opt(None, "bf16 training (default: on a GPU that supports it; on a CPU with native bf16 "
                                  "(AVX512-BF16 or AMX), where the base weights are then held in bf16).")
    gradient_checkpointing: bool | None = opt(None, "Recompute activations in the backward pass: less memory, "
                                                    f"more compute ({note('train', 'gradient_checkpointing')}).")
    min_steps_per_epoch: int | None = opt(None, "Lower grad_accum for a small cluster so that each epoch takes at "
                                                "least this many optimizer steps (same compute; "
                                                f"{note('train', 'min_steps_per_epoch')}).")

    def __post_init__(self) -> None:
        if self.profile not in PROFILE_NAMES:
            raise ConfigError(f"train.profile: {self.profile!r} is not one of {', '.join(PROFILE_NAMES)}")
        ints = [v for v in (self.epochs, self.critic_epochs, self.lora_r, self.lora_alpha, self.batch_size,
                            self.grad_accum, self.max_length, self.min_pairs, self.min_steps_per_epoch,
                            self.min_val_logs)
                if v is not None]
        if min(ints) < 1:
            raise ConfigError("epochs, critic_epochs, lora_r, lora_alpha, batch_size, grad_accum, "
                              "max_length, min_pairs, min_steps_per_epoch and min_val_logs must be ≥ 1")
        if self.critic_folds < 0:
            raise ConfigError("train.critic_folds must be ≥ 0")
        if not 0.0 < self.max_user_share <= 1.0:
            raise ConfigError("train.max_user_share must be in (0, 1]")
        if not (0.0 <= self.val_fraction < 1.0 and 0.0 <= self.lora_dropout < 1.0 and self.learning_rate > 0):
            raise ConfigError("val_fraction and lora_dropout must be in [0, 1), learning_rate > 0")
        if self.experts not in ("all", "primary", "none"):
            raise ConfigError(f"experts: {self.experts!r} is not one of all, primary, none")
        if self.critics not in ("all", "reflective", "none"):
            raise ConfigError(f"critics: {self.critics!r} is not one of all, reflective, none")
        if self.dpo_weight < 0 or self.sft_weight < 0 or self.dpo_weight + self.sft_weight == 0:
            raise ConfigError("dpo_weight and sft_weight must be ≥ 0 and not both 0")

    def resolved(self) -> TrainConfig:
        """A copy with ``profile`` decided (auto: gpu when CUDA is available) and every unset field filled."""
        profile = self.profile
        if profile == "auto":
            import torch

            profile = "gpu" if torch.cuda.is_available() else "cpu"
        unset = {k: v for k, v in train_values(profile).items() if getattr(self, k) is None}
        if self.bf16 is None:
            unset["bf16"] = gpu_bf16() if profile == "gpu" else cpu_bf16()
        return replace(self, profile=profile, **unset)


@dataclass
class ModuleInfo:
    """One trained module: its id, cluster, kind, adapter folder, epochs, losses and timing."""

    id: str
    cluster: int
    kind: str
    path: str
    epochs: int
    metrics: dict[str, Any]
    seconds: float
    n_train: int
    n_val: int
    reused: bool = False


# -- trainers --------------------------------------------------------------------------------


def _lora_config(cfg: TrainConfig) -> Any:
    from peft import LoraConfig

    assert cfg.lora_r is not None and cfg.lora_alpha is not None, "a resolved() configuration"
    return LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=cfg.target_modules, bias="none", task_type="CAUSAL_LM")


def accumulation(cfg: TrainConfig, n_train: int) -> int:
    """The gradient accumulation for ``n_train`` rows: ``cfg.grad_accum``, lowered (to 1 at least) until an
    epoch takes ``cfg.min_steps_per_epoch`` optimizer steps.

    Why: with the cpu profile's accumulation of 4, clusters of 2–3 pairs took about two optimizer steps
    in all, and the adapters answered the validation queries exactly as the base model did. Fewer rows
    per step give more updates for the same compute.
    """
    assert cfg.grad_accum is not None, "a resolved() configuration"
    if not cfg.min_steps_per_epoch:
        return cfg.grad_accum
    return max(1, min(cfg.grad_accum, n_train // (cfg.batch_size * cfg.min_steps_per_epoch)))


def _trainer_args(cfg: TrainConfig, out: Path, epochs: int, has_val: bool, n_train: int) -> dict[str, Any]:
    import torch

    cuda = torch.cuda.is_available()
    bf16 = cfg.bf16 if cfg.bf16 is not None else gpu_bf16()
    return {"output_dir": str(out / "trainer"), "num_train_epochs": epochs, "learning_rate": cfg.learning_rate,
            "lr_scheduler_type": "cosine", "per_device_train_batch_size": cfg.batch_size,
            "per_device_eval_batch_size": cfg.batch_size, "gradient_accumulation_steps": accumulation(cfg, n_train),
            "max_length": cfg.max_length, "logging_steps": 1, "save_strategy": "no",
            "eval_strategy": "epoch" if has_val else "no", "report_to": [], "seed": cfg.seed, "bf16": bf16,
            _checkpointing_key(): cfg.gradient_checkpointing, "use_cpu": not cuda,
            "disable_tqdm": True, "log_level": "warning"}


def _checkpointing_key() -> str:
    """Transformers 5.x renamed ``gradient_checkpointing`` (still accepted, with a FutureWarning)."""
    from transformers import TrainingArguments

    fields = getattr(TrainingArguments, "__dataclass_fields__", {})
    return "activation_checkpointing" if "activation_checkpointing" in fields else "gradient_checkpointing"


def _load(base: Path, cfg: TrainConfig) -> tuple[Any, Any]:
    """The base model and tokenizer. On a CPU the frozen weights are held in bf16 with ``bf16`` (half the
    memory; PEFT keeps the LoRA weights in fp32), else in fp32 whatever the checkpoint's dtype (torch
    emulates bf16 slowly without native support); on a GPU in the checkpoint's dtype."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(base)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    dtype = "auto" if torch.cuda.is_available() else torch.bfloat16 if cfg.bf16 else torch.float32
    if not torch.cuda.is_available():
        narrow_vocab_tiles()
    return AutoModelForCausalLM.from_pretrained(base, dtype=dtype), tok


#: Vocabulary columns per tile of TRL's chunked log-probabilities on a CPU (TRL's own: 32,768).
CPU_VOCAB_TILE = 8192


def narrow_vocab_tiles() -> None:
    """Make TRL's fused LM head (DPO's log-probabilities) work on narrower vocabulary tiles; nothing when this TRL
    has no such setting.

    Why: on a CPU the tile is folded with torch ops whose fp32 temporaries are tokens × tile wide. For a pair at
    the cpu profile's ``max_length`` (2 × 1,280 tokens) TRL's 32,768 columns added 2.7 GB to the peak of one
    forward and backward of Qwen2.5's 151,936-word head, 8,192 added 0.9 GB, the head taking 15% longer
    (scripts/measure_vocab_tile.py): the expert's longest steps were the training child's peak.
    """
    try:
        import trl.trainer.utils as trl_utils
    except ImportError:
        return
    if hasattr(trl_utils, "_CHUNKED_LOGPROB_CHUNK_SIZE"):
        trl_utils._CHUNKED_LOGPROB_CHUNK_SIZE = CPU_VOCAB_TILE


def _save_each_epoch(out: Path) -> Any:
    """A callback that saves the LoRA adapter after every epoch as ``out/epoch-<k>``."""
    from transformers import TrainerCallback

    class SaveEachEpoch(TrainerCallback):
        def on_epoch_end(self, args, state, control, model=None, **kwargs):  # noqa: D102
            if state.is_world_process_zero and model is not None:
                model.save_pretrained(epoch_dir(out, round(state.epoch)))

    return SaveEachEpoch()


def _quiet(trainer: Any, desc: str) -> Any:
    """Replace the trainer's printing of log dicts (stdout) with one progress bar on stderr."""
    from tqdm import tqdm
    from transformers import PrinterCallback, ProgressCallback, TrainerCallback

    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)

    class Bar(TrainerCallback):
        bar: Any = None

        def on_train_begin(self, args, state, control, **kwargs):  # noqa: D102
            self.bar = tqdm(total=state.max_steps, desc=desc, unit="step", disable=None)

        def on_step_end(self, args, state, control, **kwargs):  # noqa: D102
            self.bar.update(1)

        def on_train_end(self, args, state, control, **kwargs):  # noqa: D102
            self.bar.close()

    trainer.add_callback(Bar())
    return trainer


def epoch_metrics(log_history: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean training loss per epoch and the evaluation loss logged at each epoch's end."""
    train: dict[int, list[float]] = defaultdict(list)
    evals: dict[int, float] = {}
    for entry in log_history:
        epoch = max(1, math.ceil(entry.get("epoch", 0) - 1e-9))
        if "loss" in entry:
            train[epoch].append(float(entry["loss"]))
        if "eval_loss" in entry:
            evals[round(entry["epoch"])] = float(entry["eval_loss"])
    return {"train_loss": {e: sum(v) / len(v) for e, v in sorted(train.items())}, "eval_loss": evals}


def length_fit(tok: Any, rows: list[dict[str, Any]], max_length: int | None) -> dict[str, int]:
    """How many conversational training ``rows`` do not fit in ``max_length`` tokens: ``rows_left_out`` (the
    prompt alone reaches it: the trainer keeps no answer token) and ``rows_cut`` (the prompt and its longest
    answer, ``chosen``/``rejected`` or ``completion``, exceed it: the answer's end and its stop token are lost)."""
    left_out = cut = 0
    if not max_length:
        return {"rows_left_out": left_out, "rows_cut": cut}
    for row in rows:
        n_prompt = _n_tokens(tok, row["prompt"], add_generation_prompt=True)
        n_full = max(_n_tokens(tok, row["prompt"] + row[k]) for k in ("chosen", "rejected", "completion") if k in row)
        left_out += n_prompt >= max_length
        cut += n_prompt < max_length < n_full
    return {"rows_left_out": left_out, "rows_cut": cut}


def _n_tokens(tok: Any, messages: list[dict[str, str]], **kwargs: Any) -> int:
    return len(tok.apply_chat_template(messages, return_dict=True, **kwargs)["input_ids"])


def unfit_warning(info: ModuleInfo, max_length: int | None) -> str | None:
    """A one-line warning when some of a newly trained module's rows did not fit in ``max_length``."""
    left_out, cut = info.metrics.get("rows_left_out", 0), info.metrics.get("rows_cut", 0)
    if info.reused or not (left_out or cut):
        return None
    return (f"cluster {info.cluster} {info.kind}: {left_out} of its {info.n_train} training rows were left out "
            f"(the prompt alone reaches max_length={max_length} tokens) and {cut} cut short; "
            "raise train.max_length")


def train_expert(base: Path, train: list[dict], val: list[dict], cfg: TrainConfig, out: Path) -> dict[str, Any]:
    """DPO (sigmoid) + SFT LoRA training on preference rows; adapters saved per epoch under ``out``."""
    from datasets import Dataset, disable_progress_bars
    from trl import DPOConfig, DPOTrainer

    disable_progress_bars()  # TRL's tokenizing bars; the trainer gets one bar (_quiet)

    assert cfg.epochs is not None, "a resolved() configuration"
    model, tok = _load(base, cfg)
    args = DPOConfig(**_trainer_args(cfg, out, cfg.epochs, bool(val), len(train)), beta=cfg.beta,
                     loss_type=["sigmoid", "sft"], loss_weights=[cfg.dpo_weight, cfg.sft_weight])
    trainer = DPOTrainer(model=model, args=args, train_dataset=Dataset.from_list(train),
                         eval_dataset=Dataset.from_list(val) if val else None, processing_class=tok,
                         peft_config=_lora_config(cfg), callbacks=[_save_each_epoch(out)])
    _quiet(trainer, "expert").train()
    return {**epoch_metrics(trainer.state.log_history), "steps": trainer.state.global_step,
            **length_fit(tok, train, cfg.max_length)}


def train_critic(base: Path, train: list[dict], val: list[dict], cfg: TrainConfig, out: Path) -> dict[str, Any]:
    """SFT LoRA training on (question, answer) → rules rows; adapters saved per epoch under ``out``."""
    from datasets import Dataset, disable_progress_bars
    from trl import SFTConfig, SFTTrainer

    disable_progress_bars()

    assert cfg.critic_epochs is not None, "a resolved() configuration"
    model, tok = _load(base, cfg)
    args = SFTConfig(**_trainer_args(cfg, out, cfg.critic_epochs, bool(val), len(train)), completion_only_loss=True)
    trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(train),
                         eval_dataset=Dataset.from_list(val) if val else None, processing_class=tok,
                         peft_config=_lora_config(cfg), callbacks=[_save_each_epoch(out)])
    _quiet(trainer, "critic").train()
    return {**epoch_metrics(trainer.state.log_history), "steps": trainer.state.global_step,
            **length_fit(tok, train, cfg.max_length)}


TRAINERS = {"expert": (expert_rows, train_expert), "critic": (critic_rows, train_critic),
            "critic-fold": (critic_rows, train_critic)}


# -- the stage -------------------------------------------------------------------------------


def model_identity(base: Path) -> str:
    """What identifies a Hugging Face model folder, wherever it lies: its folder name and a hash of
    its config and of its weight files' names and sizes (not its path, which moves with the workspace)."""
    weights = sorted((f.name, f.stat().st_size) for f in base.iterdir()
                     if f.suffix in (".safetensors", ".bin") and f.is_file())
    config = json.loads((base / "config.json").read_text(encoding="utf-8"))
    return f"{base.name}@{content_hash('model', {'config': config, 'weights': weights})[-16:]}"


def _module_key(kind: str, cluster: int, model: str, cfg: TrainConfig, train: list, val: list) -> tuple[str, str]:
    """(module id, data hash): the same data, base model (its :func:`model_identity`) and configuration
    give the same module."""
    data_hash = content_hash("data", {"train": train, "val": val})
    relevant = {k: v for k, v in asdict(cfg).items() if k not in ("critics", "min_pairs", "base_model", "min_val_logs",
                                                                  "max_user_share", "critic_folds")}
    return content_hash(kind, {"cluster": cluster, "data": data_hash, "base": model, "cfg": relevant}), data_hash


def _existing(ws: Workspace, module_id: str, clustering: int | None) -> ModuleInfo | None:
    """The stored module ``module_id``, made part of ``clustering`` (the current one); None when there is none."""
    m = ws.module(module_id)
    if not m:
        return None
    ws.adopt_module(module_id, clustering)
    return ModuleInfo(module_id, m["cluster"], m["kind"], m["path"], m["epochs"], m["metrics"], m["seconds"],
                      len(m["train_logs"]), len(m["val_logs"]), reused=True)


class NoExampleFits(InputError):
    """Every training example of a module is longer than ``max_length`` (the trainer drops them all)."""


def train_module(ws: Workspace, kind: str, cluster: int, base: Path, cfg: TrainConfig,
                 train_ids: list[str], val_ids: list[str], clustering: int | None) -> ModuleInfo | None:
    """Train one expert or critic for ``cluster`` of ``clustering`` (the version training started on), or
    reuse the identical one; None when no data. A ClusteringChangedError when the logs were re-clustered
    meanwhile (the module is not recorded)."""
    assert cfg.min_pairs is not None and cfg.epochs is not None and cfg.critic_epochs is not None, "resolved()"
    make_rows, trainer = TRAINERS[kind]
    partition = content_hash("logs", sorted({*train_ids, *val_ids}))  # a critic's folds share their critic's
    train_ids, held = admitted(ws, sorted(train_ids), cfg)
    train, val = make_rows(ws, train_ids), make_rows(ws, val_ids)
    if learning_rows(kind, train) < (cfg.min_pairs if kind == "expert" else 1):
        return None
    model = model_identity(base)
    module_id, data_hash = _module_key(kind, cluster, model, cfg, train, val)
    if found := _existing(ws, module_id, clustering):
        return found
    final = ws.artifacts / "modules" / module_id
    tmp = final.with_name(f".{module_id}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    start = time.perf_counter()
    try:
        with warnings.catch_warnings():  # PEFT and TRL still call the renamed checkpointing methods
            warnings.filterwarnings("ignore", r".*gradient_checkpointing.*deprecated", FutureWarning)
            metrics = trainer(base, train, val, cfg, tmp)
    except ValueError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if "num_samples" in str(e):
            raise NoExampleFits(f"cluster {cluster}: no {kind} example fits in max_length={cfg.max_length} "
                                "tokens; raise max_length") from e
        raise
    finally:
        # The trainer, its callbacks and the model hold each other: free them now, not when the cycle
        # collector next runs, or the next module's model is loaded beside this one (+2 GB measured).
        gc.collect()
    seconds = time.perf_counter() - start
    metrics = {**metrics, "logs_quarantined": held["quarantined"], "logs_capped": held["capped"],
               "partition": partition}
    shutil.rmtree(tmp / "trainer", ignore_errors=True)
    epochs = cfg.epochs if kind == "expert" else cfg.critic_epochs
    shutil.rmtree(final, ignore_errors=True)
    tmp.replace(final)
    ws.add_module({"id": module_id, "cluster": cluster, "kind": kind, "path": ws.relative(final), "epochs": epochs,
                   "base_model": model, "data_hash": data_hash, "config": json.dumps(asdict(cfg)),
                   "metrics": json.dumps(metrics), "train_logs": json.dumps(train_ids),
                   "val_logs": json.dumps(val_ids), "seconds": seconds}, clustering)
    return ModuleInfo(module_id, cluster, kind, str(final), epochs, metrics, seconds, len(train), len(val))


def limit_heap_growth() -> None:
    """Make glibc return freed large blocks to the OS at once (no-op elsewhere).

    By default glibc raises its mmap threshold after each large free, so torch's activations and
    gradients (megabytes each) come from the heap, which fragments and is never given back: two
    fp32 training steps of the 0.5B model left 9.5 GB resident. With a fixed threshold the same steps
    peak at 3.8 GB (fp32); in bf16, 1 MiB kept the speed (27 s a step) where 128 KiB cost 20–40% and
    4 MiB kept 30% more memory (measured on a 2-core CPU).
    """
    m_trim_threshold, m_mmap_threshold = -1, -3
    _glibc("mallopt", m_mmap_threshold, 1 << 20)
    _glibc("mallopt", m_trim_threshold, 1 << 20)


def _glibc(name: str, *args: int) -> None:
    """Call a glibc allocator function; nothing on other C libraries."""
    try:
        getattr(ctypes.CDLL("libc.so.6"), name)(*args)
    except (OSError, AttributeError):  # not glibc
        pass


def module_kinds(cfg: TrainConfig, gap_plan: str | None) -> list[str]:
    """The modules a cluster with ``gap_plan`` (primary / reflective / None: not assessed) gets under ``cfg``."""
    reflective = gap_plan == "reflective"
    kinds = ["expert"] if cfg.experts == "all" or (cfg.experts == "primary" and not reflective) else []
    if cfg.critics == "all" or (cfg.critics == "reflective" and reflective):
        kinds.append("critic")
    return kinds


def run(ws: Workspace, cfg: TrainConfig | None = None, cluster: int | None = None,
        on_module=None, executor: ExecutorConfig | None = None) -> list[ModuleInfo]:
    """Train the experts and critics the plan calls for, for one cluster or all of them.

    The modules belong to the clustering current when training starts; if the logs are re-clustered
    meanwhile (a shared store), storing the next module raises ClusteringChangedError. ``executor`` (default:
    local) runs each module's training as a job (:mod:`unolearn.executor`); on Ray, a job that fails past its
    retries is reported (``failed`` in the run's record) and the others complete.
    """
    limit_heap_growth()
    cfg = (cfg or TrainConfig()).resolved()
    clustering = ws.clustering_id()  # first: the clusters read below are this version's or newer (then refused)
    plans = {cluster: g["plan"] for cluster, g in ws.gaps().items()}
    clusters = ws.cluster_ids()
    if not clusters:
        raise InputError("no clusters: run `unolearn cluster` (and `unolearn assess`) first")
    if cluster is not None:
        if cluster not in clusters:
            raise InputError(f"no cluster {cluster}; clusters are 0..{max(clusters)}")
        clusters = [cluster]
    base = resolve_base_model(ws, cfg.base_model)
    jobs = [job for c in clusters for job in _cluster_jobs(ws, cfg, c, plans.get(c))]
    with ws.recorded_run("train", asdict(cfg)) as result:
        done, skipped, failed = _train_jobs(ws, cfg, base, clustering, jobs, executor or ExecutorConfig(), on_module)
        result.update(modules=[m.id for m in done], skipped=skipped, **({"failed": failed} if failed else {}))
    return done


def _cluster_jobs(ws: Workspace, cfg: TrainConfig, c: int, gap_plan: str | None) -> list[tuple[str, tuple]]:
    """The training jobs ``(key, (kind, cluster, train ids, val ids))`` of cluster ``c``: its expert on the held-out
    split, its critic (and the critic's folds: :func:`critic_splits`)."""
    kinds = module_kinds(cfg, gap_plan)
    splits = [("expert", *split_members(ws, c, cfg))] if "expert" in kinds else []
    splits += critic_splits(ws, c, cfg) if "critic" in kinds else []
    folds = iter(range(1, len(splits) + 1))
    return [(f"{kind}{f' {next(folds)}' if kind == 'critic-fold' else ''} of cluster {c}", (kind, c, train, val))
            for kind, train, val in splits]


def _train_jobs(ws: Workspace, cfg: TrainConfig, base: Path, clustering: int | None, jobs: list[tuple[str, tuple]],
                executor: ExecutorConfig, on_module: Any) -> tuple[list[ModuleInfo], list[str], list[str]]:
    """Run the training jobs ``(key, (kind, cluster, train ids, val ids))``; the modules trained, the clusters
    skipped (no example fits) and the jobs failed (on Ray, past their retries)."""
    if executor.kind == "local":
        def one(kind: str, c: int, train_ids: list[str], val_ids: list[str]) -> ModuleInfo | str | None:
            return _trained(ws, kind, c, base, cfg, train_ids, val_ids, clustering)
        outcomes = run_jobs(executor, one, jobs)
    else:
        where = (str(ws.root), ws.store, str(base), cfg, clustering)
        outcomes = run_jobs(executor, _train_at, [(key, (*where, *args)) for key, args in jobs], gpu=True)
    done, skipped, failed = [], [], []
    for o in outcomes:
        if isinstance(o.value, str):  # one cluster's long logs must not stop the others' training
            skipped.append(o.value)
            print(f"warning: {o.value}", file=sys.stderr)
        elif o.error is not None:
            failed.append(f"{o.key}: {one_line(o.error, 300)}")
            print(f"warning: training the {o.key} failed: {one_line(o.error, 300)}", file=sys.stderr)
        elif o.value:
            if warning := unfit_warning(o.value, cfg.max_length):
                print(f"warning: {warning}", file=sys.stderr)
            done.append(o.value)
            if on_module:
                on_module(o.value)
    return done, skipped, failed


def _train_at(root: str, store: str | None, base: str, cfg: TrainConfig, clustering: int | None, kind: str,
              cluster: int, train_ids: list[str], val_ids: list[str]) -> ModuleInfo | str | None:
    """One module's training as a job of its own (a Ray task): it opens the workspace itself."""
    limit_heap_growth()
    with Workspace.open(root, store) as ws:
        return _trained(ws, kind, cluster, Path(base), cfg, train_ids, val_ids, clustering)


def _trained(ws: Workspace, kind: str, cluster: int, base: Path, cfg: TrainConfig, train_ids: list[str],
             val_ids: list[str], clustering: int | None) -> ModuleInfo | str | None:
    """:func:`train_module`, with a cluster none of whose examples fits as the reason it was skipped."""
    try:
        return train_module(ws, kind, cluster, base, cfg, train_ids, val_ids, clustering)
    except NoExampleFits as e:
        return str(e)


def run_in_child(root: Path, cfg: TrainConfig | None = None, cluster: int | None = None, *,
                 store: str | None = None, executor: ExecutorConfig | None = None) -> list[ModuleInfo]:
    """:func:`run` on the workspace at ``root`` (on ``store``, a URL; None: its SQLite) in a fresh (spawned) process.

    For a job whose stages share one process: everything training allocates (the model, torch's
    allocator pools, which the C allocator keeps after they are freed) goes back to the OS when the
    child ends, so the next stages do not add their memory on top of it. The child writes its modules
    into the workspace; errors it raises are raised here.
    """
    _glibc("malloc_trim", 0)  # give back what earlier stages freed (the embedded model's buffers) first
    with child_pool() as pool:  # a child that a killed parent leaves behind exits too
        try:
            return pool.submit(_run_at, str(root), cfg, cluster, store, executor).result()
        except BrokenProcessPool:
            raise UnolearnError("the training process died (out of memory, or a native crash in torch); "
                                "run `unolearn train` alone to see its error") from None


def _run_at(root: str, cfg: TrainConfig | None, cluster: int | None, store: str | None,
            executor: ExecutorConfig | None) -> list[ModuleInfo]:
    with Workspace.open(root, store) as ws:
        return run(ws, cfg, cluster, executor=executor)


def list_modules(ws: Workspace) -> list[dict[str, Any]]:
    """Every trained module with its provenance."""
    version = ws.clustering()
    current = version.id if version else None
    keys = ("id", "cluster", "kind", "path", "epochs", "base_model", "data_hash", "metrics", "created_at")
    return [{**{k: m[k] for k in keys}, "seconds": round(m["seconds"], 1), "n_train": len(m["train_logs"]),
             "n_val": len(m["val_logs"]), "current": m["clustering"] == current}
            for m in ws.all_modules()]
