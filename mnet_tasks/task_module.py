"""What every task module shares: the backbone from config, parameter groups, optimizer and lr schedule."""

from __future__ import annotations

import functools
import logging
import math
import warnings
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any, ClassVar

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from lightning_utilities.core.apply_func import apply_to_collection
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.utils.data.distributed import DistributedSampler

from mnet_tasks.backbone import MobileNetV1
from mnet_tasks.checkpoints import check_targets
from mnet_tasks.config import ConfigError
from mnet_tasks.data.transforms import is_uint8_image, normalize_images
from mnet_tasks.distributed import any_rank
from mnet_tasks.registry import CHECKPOINT_KEY, registered_name
from mnet_tasks.weights import IMAGENET_NORMALIZE, load_pretrained

log = logging.getLogger(__name__)
# Lightning warns whenever a module defines on_after_batch_transfer and a DataModule is passed, though it then uses
# the module's, as meant here (TaskModule.on_after_batch_transfer); the DataModules here define none.
warnings.filterwarnings("ignore", message="You have overridden `on_after_batch_transfer` in `LightningModule`")

# Keys of the backbone group that set the input size rather than the network (see config.resolve_input_size).
INPUT_SIZE_KEYS = ("rho", "resolution")


def build_backbone(backbone: Mapping[str, Any], **overrides: Any) -> MobileNetV1:
    """A MobileNetV1 from the ``backbone`` config group, with its pretrained weights if it names any."""
    kwargs = {k: v for k, v in backbone.items() if k not in INPUT_SIZE_KEYS and k != "pretrained"}
    model = MobileNetV1(**kwargs, **overrides)
    if source := backbone.get("pretrained"):
        try:
            load_pretrained(model, source)
        except Exception as error:  # any unreadable or unfitting file: say which config key named it
            raise ValueError(f"backbone.pretrained={source} cannot be loaded: {error}") from error
    return model


def is_batchnorm(module: nn.Module) -> bool:
    return isinstance(module, nn.modules.batchnorm._BatchNorm)  # BatchNorm1d/2d/3d and SyncBatchNorm


def is_depthwise(module: nn.Module) -> bool:
    return isinstance(module, nn.Conv2d) and module.groups > 1 and module.groups == module.in_channels


def parameter_groups(
    model: nn.Module,
    weight_decay: float,
    backbone_params: Collection[nn.Parameter] = (),
    backbone_lr_scale: float = 1.0,
) -> list[dict[str, Any]]:
    """Weight decay on conv and linear weights only: not on depthwise filters (the paper), BN or biases.

    With a ``backbone_lr_scale`` other than 1, ``backbone_params`` (the pretrained part) and the rest (the head)
    are split as well: four groups, named ``{backbone,head}_{decay,no_decay}``, each with its ``lr_scale``, which
    :meth:`TaskModule.configure_optimizers` multiplies into the group's learning rate.
    """
    decay, no_decay = [], []
    for module in model.modules():
        for name, param in module.named_parameters(recurse=False):
            if not param.requires_grad:
                continue
            decays = name == "weight" and isinstance(module, (nn.Conv2d, nn.Linear)) and not is_depthwise(module)
            (decay if decays else no_decay).append(param)
    if backbone_lr_scale == 1.0:
        return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    in_backbone = {id(p) for p in backbone_params}
    groups = []
    for part, lr_scale in (("backbone", backbone_lr_scale), ("head", 1.0)):
        for kind, params, decay_rate in (("decay", decay, weight_decay), ("no_decay", no_decay, 0.0)):
            chosen = [p for p in params if (id(p) in in_backbone) == (part == "backbone")]
            if chosen:
                groups.append(
                    {"params": chosen, "weight_decay": decay_rate, "lr_scale": lr_scale, "name": f"{part}_{kind}"}
                )
    return groups


def lr_multiplier(
    step: int,
    steps_per_epoch: float,
    total_steps: int,
    name: str = "cosine",
    warmup_epochs: float = 0.0,
    decay_rate: float = 0.94,
    decay_epochs: float = 2.5,
) -> float:
    """Learning-rate factor at an optimizer step: linear warmup, then cosine, staircase exponential or constant.

    Used through ``torch.optim.lr_scheduler.LambdaLR``, stepped every optimizer step. A chain of torch's schedulers
    (``SequentialLR`` of ``LinearLR`` and ``CosineAnnealingLR`` / ``StepLR``) counts whole scheduler steps and lacks
    the TF staircase at a fractional epoch (``decay_epochs=2.5``) when steps per epoch vary with the data; one
    factor of the step number gives all three and scales each parameter group's own base lr (``lr_scale``).
    """
    warmup_steps = warmup_epochs * steps_per_epoch
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if name == "cosine":
        progress = (step - warmup_steps) / max(1.0, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    if name == "exponential":
        return decay_rate ** math.floor(step / (decay_epochs * steps_per_epoch))
    if name == "constant":
        return 1.0
    raise ValueError(f"task.lr_schedule.name must be cosine, exponential or constant, got {name!r}")


def options_from_config(cls: type, options: Mapping[str, Any] | None, key: str) -> dict[str, Any]:
    """``options`` as a plain dict, after checking that each is a field of the dataclass ``cls`` (the config
    section ``key``, named in the error)."""
    options = dict(options or {})
    known = [f.name for f in fields(cls)]
    for name in options:
        if name not in known:
            raise ValueError(f"{key}.{name} is not an option; choose from {', '.join(known)}")
    return options


@dataclass(frozen=True)
class FinetuneOptions:
    """How a task trains its pretrained backbone (``task.finetune``); the defaults train everything alike.

    The task module applies them itself (``on_train_epoch_start``, ``train``) rather than through Lightning's
    ``BaseFinetuning`` callback: a module built in a user's own Trainer freezes as configured without a callback,
    and the optimizer holds the backbone's parameters from the start, where ``BaseFinetuning`` adds them as a new
    parameter group when it unfreezes them, so that a checkpoint from before and one from after differ in their
    optimizer's groups.

    Attributes:
        backbone_lr_scale: learning-rate factor of the backbone's parameters (all of ``self.backbone`` but its
            classifier) relative to the head's, e.g. 0.1 to adapt pretrained features gently.
        freeze_backbone_epochs: the backbone is frozen (no gradients, BatchNorm in eval mode) for the first N
            epochs so that a fresh head first learns on fixed features; it then trains with the rest.
        freeze_bn: the backbone's BatchNorm layers stay in eval mode (running statistics kept) with their scale
            and shift frozen, for small batches or data much smaller than the pretraining set.
    """

    backbone_lr_scale: float = 1.0
    freeze_backbone_epochs: int = 0
    freeze_bn: bool = False

    @classmethod
    def from_config(cls, options: Mapping[str, Any] | None) -> FinetuneOptions:
        options = options_from_config(cls, options, "task.finetune")
        scale = options.get("backbone_lr_scale", 1.0)
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) or scale < 0:
            raise ValueError(f"task.finetune.backbone_lr_scale must be a number >= 0, got {scale!r}")
        epochs = options.get("freeze_backbone_epochs", 0)
        if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 0:
            raise ValueError(f"task.finetune.freeze_backbone_epochs must be an integer >= 0, got {epochs!r}")
        freeze_bn = options.get("freeze_bn", False)
        if not isinstance(freeze_bn, bool):
            raise ValueError(f"task.finetune.freeze_bn must be true or false, got {freeze_bn!r}")
        return cls(float(scale), epochs, freeze_bn)

    @property
    def active(self) -> bool:
        return self != FinetuneOptions()


NONFINITE_LOSS_ACTIONS = ("stop", "skip")
# Keys of the task config that set how it trains and reports, not what it builds: build_task applies them
# (TaskModule.set_nonfinite_loss, TaskModule.set_error_analysis), so that no task's __init__ needs to accept them.
TRAINING_POLICY_KEYS = ("nonfinite_loss", "max_nonfinite_skips", "error_analysis")


def _checks_loss(training_step: Callable[..., Any]) -> Callable[..., Any]:
    """``training_step`` followed by :meth:`TaskModule.check_loss` (put on every task by ``__init_subclass__``)."""

    @functools.wraps(training_step)
    def checked(self: TaskModule, batch: Any, batch_idx: int, *args: Any, **kwargs: Any) -> Any:
        return self.check_loss(training_step(self, batch, batch_idx, *args, **kwargs), batch_idx)

    checked.checks_loss = True
    return checked


class TaskModule(pl.LightningModule):
    """Base of every task: subclasses build their network in ``__init__`` and define the steps.

    Args:
        backbone: the ``backbone`` config group.
        optimizer: a ``_target_`` config of a torch optimizer, built over :func:`parameter_groups`.
        lr_schedule: arguments of :func:`lr_multiplier`, applied every optimizer step.
        weight_decay: decay of the conv and linear weights (depthwise filters excluded).
        monitor / monitor_mode: the primary metric and whether higher is better.
        finetune: :class:`FinetuneOptions` as a mapping (``task.finetune``); they act on ``self.backbone``.
        normalize: the ``mean`` and ``std`` the inputs are normalised with (the top-level ``normalize``, which
            follows ``backbone.pretrained``); recorded in the checkpoint for export and for runs that start from it.

    The task contract (tests/plugin_example/README.md): the ``task`` config gives ``_target_`` (a class registered
    in the ``mnet_tasks.tasks`` entry points), ``name``, ``native_resolution``, ``backbone: ${backbone}``,
    ``monitor`` and ``monitor_mode`` (logged as ``val/...`` every validation epoch), ``optimizer``,
    ``lr_schedule`` and ``weight_decay``; its DataModule has ``dataset_name`` and ``head_kwargs()`` (the
    constructor arguments only the data knows, e.g. ``num_classes``). ``adapter`` says how the trained model is
    exported, run by predict and timed by the bench (:class:`mnet_tasks.adapter.TaskAdapter`; ``None``: its
    ``forward`` gives the logits of classifier heads).
    """

    adapter: ClassVar[Any] = None
    # The layout prepare_images gives batches: the TrainingSpeed callback sets the network's (trainer.channels_last)
    memory_format: torch.memory_format = torch.contiguous_format
    # task.nonfinite_loss and task.max_nonfinite_skips (set by set_nonfinite_loss): what a NaN/inf training loss does
    nonfinite_loss: str = "stop"
    max_nonfinite_skips: int = 10
    # task.error_analysis (set by set_error_analysis): whether validation writes the pictures and tables of its errors
    error_analysis: bool = True

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Every task's ``training_step`` has its loss checked (:meth:`check_loss`)."""
        super().__init_subclass__(**kwargs)
        step = cls.__dict__.get("training_step")
        if step is not None and not getattr(step, "checks_loss", False):
            cls.training_step = _checks_loss(step)

    def set_nonfinite_loss(self, nonfinite_loss: str = "stop", max_nonfinite_skips: int = 10) -> None:
        """``stop``: a NaN or infinite training loss ends the run with an error naming the step; ``skip``: the batch
        is dropped (no optimizer step), counted and logged, and only ``max_nonfinite_skips`` consecutive drops end
        the run (the model has diverged)."""
        if nonfinite_loss not in NONFINITE_LOSS_ACTIONS:
            raise ValueError(f"task.nonfinite_loss must be stop or skip, got {nonfinite_loss!r}")
        if isinstance(max_nonfinite_skips, bool) or not isinstance(max_nonfinite_skips, int) or max_nonfinite_skips < 1:
            raise ValueError(f"task.max_nonfinite_skips must be an integer >= 1, got {max_nonfinite_skips!r}")
        self.nonfinite_loss, self.max_nonfinite_skips = nonfinite_loss, max_nonfinite_skips

    def set_error_analysis(self, enabled: bool = True) -> None:
        """Whether every validation epoch (but the sanity check) collects the task's mistakes and writes their
        pictures and tables to ``analysis/`` in the run folder (:mod:`mnet_tasks.analysis`); off, nothing is
        collected."""
        if not isinstance(enabled, bool):
            raise ConfigError(f"task.error_analysis must be true or false, got {enabled!r}")
        self.error_analysis = enabled

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """The loaders deliver images as uint8 (:mod:`mnet_tasks.data.transforms`); on the device, every uint8
        ``(..., 3, H, W)`` tensor of the batch becomes the network's input here (:meth:`prepare_images`). Batches of
        float images pass as they are. Loops that feed the module without a Trainer call this too."""
        return apply_to_collection(batch, torch.Tensor, lambda t: self.prepare_images(t) if is_uint8_image(t) else t)

    def prepare_images(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 images as the network takes them: float, normalised by ``normalize``, in :attr:`memory_format`. A
        task whose network normalises itself (detection) overrides it."""
        return normalize_images(images, **self.normalize, memory_format=self.memory_format)

    def distinct_items(self, batch_idx: int, count: int) -> int:
        """How many of validation batch ``batch_idx``'s ``count`` items to evaluate: under DDP, Lightning's
        ``DistributedSampler`` pads the ranks' shares to one length by repeating the first images, as the last item
        of some ranks; evaluated twice they would count twice. The repeats are left out (every image counts once)."""
        loader = self.trainer.val_dataloaders
        sampler = getattr(loader, "sampler", None)
        if not isinstance(sampler, DistributedSampler) or sampler.drop_last:
            return count
        own = len(range(sampler.rank, len(sampler.dataset), sampler.num_replicas))  # this rank's distinct images
        return max(0, min(count, own - batch_idx * loader.batch_size))

    def check_loss(self, output: Any, batch_idx: int) -> Any:
        """``output`` of a training step if its loss is finite (on every process); otherwise, by
        ``task.nonfinite_loss``, an error naming the step or ``None``, which makes Lightning skip the batch."""
        loss = output.get("loss") if isinstance(output, Mapping) else output
        if loss is None:
            return output
        if not any_rank(not bool(torch.isfinite(loss.detach()).all())):
            self.nonfinite_streak = 0
            return output
        where = f"global step {self.global_step} (epoch {self.current_epoch}, batch {batch_idx})"
        value = f"{loss.detach().float().sum().item()}" if torch.is_tensor(loss) else str(loss)
        if self.nonfinite_loss == "stop":
            raise FloatingPointError(
                f"the training loss is {value} (on this or another process) at {where}; lower the learning rate, or "
                "set task.nonfinite_loss=skip to drop such batches"
            )
        self.nonfinite_streak += 1
        self.skipped_batches += 1
        if self.nonfinite_streak > self.max_nonfinite_skips:
            raise FloatingPointError(
                f"the training loss was not finite for {self.nonfinite_streak} consecutive batches, up to {where} "
                f"(task.max_nonfinite_skips={self.max_nonfinite_skips}): the model has diverged"
            )
        log.warning("skipped the batch at %s: its training loss is %s (task.nonfinite_loss=skip)", where, value)
        self.log("train/skipped_batches", float(self.skipped_batches), reduce_fx="max")
        return None

    def __init__(
        self,
        backbone: Mapping[str, Any],
        optimizer: Mapping[str, Any],
        lr_schedule: Mapping[str, Any],
        weight_decay: float,
        monitor: str,
        monitor_mode: str,
        name: str,
        native_resolution: int,
        finetune: Mapping[str, Any] | None = None,
        normalize: Mapping[str, Sequence[float]] | None = None,
    ):
        super().__init__()
        # Every __init__ argument of the subclass chain; plain containers keep checkpoints weights_only-loadable.
        self.save_hyperparameters()
        self.finetune = FinetuneOptions.from_config(finetune)
        self.normalize = {key: list(values) for key, values in (normalize or IMAGENET_NORMALIZE).items()}
        self.backbone_frozen = False  # during the first finetune.freeze_backbone_epochs epochs
        self.nonfinite_streak = 0  # consecutive training batches skipped for a NaN/inf loss
        self.skipped_batches = 0
        if self.finetune.backbone_lr_scale != 1.0 and not backbone.get("pretrained"):
            log.warning(
                "task.finetune.backbone_lr_scale=%s but backbone.pretrained is null: the backbone starts from "
                "random weights and trains at a scaled learning rate",
                self.finetune.backbone_lr_scale,
            )

    @classmethod
    def check_config(cls, cfg: DictConfig) -> None:
        """Fail with a :class:`~mnet_tasks.config.ConfigError` naming the key on a combination of values this task
        cannot train with; run before any data is touched (``validate_config``). A task overrides it if it has any."""

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Record the registered task class, which export and predict rebuild (never a ``_target_``)."""
        checkpoint[CHECKPOINT_KEY] = {"task_class": registered_name(type(self))}

    def backbone_body(self) -> list[nn.Module]:
        """The modules that ``backbone.pretrained`` fills: all of ``self.backbone`` but its classifier, which
        belongs to the head (it starts fresh when the class count differs)."""
        backbone = getattr(self, "backbone", None)
        if not isinstance(backbone, nn.Module):
            raise AttributeError(f"task.finetune needs {type(self).__name__} to keep its MobileNetV1 as self.backbone")
        head = set(backbone.get_classifier().modules()) if hasattr(backbone, "get_classifier") else set()
        return [module for module in backbone.modules() if module not in head]

    def backbone_parameters(self) -> list[nn.Parameter]:
        return [p for module in self.backbone_body() for p in module.parameters(recurse=False)]

    def set_backbone_requires_grad(self, frozen: bool) -> None:
        """Freeze or release the backbone's parameters; with ``finetune.freeze_bn`` its BN affine stays frozen."""
        for module in self.backbone_body():
            keep = frozen or (self.finetune.freeze_bn and is_batchnorm(module))
            for param in module.parameters(recurse=False):
                param.requires_grad = not keep

    def train(self, mode: bool = True) -> TaskModule:
        """As nn.Module's, but a frozen backbone's BatchNorm layers stay in eval mode (Lightning calls train()
        again after every validation)."""
        super().train(mode)
        if mode and self.finetune.active and (self.backbone_frozen or self.finetune.freeze_bn):
            for module in self.backbone_body():
                if is_batchnorm(module):
                    module.eval()
        return self

    def on_train_epoch_start(self) -> None:
        """Applies the finetune options for this epoch (a subclass overriding this hook must call super)."""
        if self.finetune.active:
            self.backbone_frozen = self.current_epoch < self.finetune.freeze_backbone_epochs
            self.set_backbone_requires_grad(self.backbone_frozen)
            self.train(self.training)

    def configure_optimizers(self) -> dict[str, Any]:
        # hparams may come from a checkpoint (load_from_checkpoint): build only trusted targets.
        check_targets(self.hparams.optimizer, f"{type(self).__name__} hyper-parameters", "optimizer")
        make_optimizer = instantiate(self.hparams.optimizer, _partial_=True)
        if self.finetune.active:
            # The optimizer must hold every parameter the backbone will train, even if it is frozen right now.
            self.set_backbone_requires_grad(frozen=False)
            backbone = self.backbone_parameters()
        else:
            backbone = []
        groups = parameter_groups(self, self.hparams.weight_decay, backbone, self.finetune.backbone_lr_scale)
        optimizer = make_optimizer(groups)
        for group in optimizer.param_groups:
            group["lr"] *= group.get("lr_scale", 1.0)  # LambdaLR below scales each group's own base lr
        total_steps = max(1, int(self.trainer.estimated_stepping_batches))
        max_epochs = self.trainer.max_epochs if self.trainer.max_epochs and self.trainer.max_epochs > 0 else 1
        steps_per_epoch = total_steps / max_epochs
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer,
            lambda step: lr_multiplier(step, steps_per_epoch, total_steps, **self.hparams.lr_schedule),
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


def build_task(cfg: DictConfig, **data_kwargs: Any) -> TaskModule:
    """The task module, its head sized by ``data_kwargs`` (what the DataModule reports) over the config's."""
    task = OmegaConf.to_container(cfg.task, resolve=True)
    policy = {key: task.pop(key) for key in TRAINING_POLICY_KEYS if key in task}
    module = instantiate(task, _recursive_=False, _convert_="all", **data_kwargs)
    module.set_error_analysis(policy.pop("error_analysis", True))
    module.set_nonfinite_loss(**policy)
    return module
