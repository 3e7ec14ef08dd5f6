"""Fine-tuning on the embedded sample: loss goes down, model directory, MLflow run, checkpoints, resume,
strategies (freezing, last-N, LoRA) and their errors, mixed precision (bf16 on the CPU). Tiny models (random init, 32-64 px), few steps."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch

from facerec.config import load_config, to_dict
from facerec.data.datasets import generate_pairs
from facerec.errors import ConfigError
from facerec.evaluation.metrics import best_threshold
from facerec.evaluation.protocols import pair_scores
from facerec.models import create_embedder, load_model_dir
from facerec.models.base import make_head
from facerec.models.inference import embed_paths
from facerec.models.lora import LoRA, merge_lora
from facerec.training import precision
from facerec.training.batches import load_records, make_sampler
from facerec.training.checkpoint import CHECKPOINT_FILE, Checkpointer, rng_state, set_rng_state
from facerec.training.config import TrainConfig, problems
from facerec.training.losses import SupConLoss
from facerec.training.precision import autocast_dtype, precision_name
from facerec.training.strategies import StrategyConfig, apply_strategy, param_groups, parameter_counts, set_train_mode
from facerec.training.trainer import Trainer, run_params, train

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs" / "train").glob("*.yaml"))
TINY = [
    "model.name=resnet18",
    "model.pretrained=none",
    "model.input_size=32",
    "data.kind=sample",
    "data.val_fraction=0.2",
    "data.val_pairs=40",
    "data.augment=light",
    "data.augmented_fraction=0.25",
    "loss.kind=contrastive",
    "loss.P=4",
    "loss.K=2",
    "optim.lr=0.001",
    "optim.head_lr=0.001",
    "epochs=2",
    "batch_size=4",
    "steps_per_epoch=2",
    "num_workers=0",
    "device=cpu",
    "amp=false",
    "val_batch_size=40",
    "run_name=tiny",
]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models: one intra-op thread is faster than two fighting over a shared CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


#: no augmentation, a constant learning rate: steps on one batch must lower its loss
FIXED_BATCH = [
    "data.augment=none",
    "data.augmented_fraction=0",
    "optim.warmup=0",
    "optim.lr=0.003",
    "optim.head_lr=0.003",
    "epochs=20",
    "steps_per_epoch=1",
]


def tiny(tmp_path: Path, *overrides: str) -> TrainConfig:
    return load_config(TrainConfig, None, [*TINY, f"output={tmp_path}", *overrides])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tiny run (2 epochs x 2 steps) shared by the read-only tests below."""
    tmp = tmp_path_factory.mktemp("train")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp / 'mlflow.db'}")
        config = tiny(tmp / "runs")
        result = train(config)
        yield config, result, mlflow.MlflowClient().get_run(result.run_id), mlflow.MlflowClient()


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_shipped_configs_load(path):
    config = load_config(TrainConfig, path)
    assert config.epochs >= 1 and 0 < config.data.val_fraction < 1


def test_one_photo_per_person_batches_serve_distillation_and_margin_losses_but_not_supcon():
    def config(kind: str) -> TrainConfig:
        return load_config(
            TrainConfig, None, [*TINY, f"loss.kind={kind}", "loss.K=1", "loss.distill.teacher=dlib-resnet"]
        )

    for kind in ("distill", "arcface", "contrastive"):
        assert problems(config(kind)) == []
    for kind in ("supcon", "infonce"):
        assert problems(config(kind)) == [
            f"loss.kind={kind} learns from in-batch positives and needs loss.K >= 2, got 1"
        ]
    distill = config("distill")
    batches = list(make_sampler(distill, load_records(distill.data, 0)[0]))
    assert batches and all(len({label for _, label in b}) == len(b) == 4 for b in batches)  # P people, one photo each


def test_training_steps_lower_the_loss_on_the_sample(tmp_path):
    config = tiny(tmp_path, *FIXED_BATCH, "batch_size=8")
    trainer = Trainer(config)
    batch = next(trainer.batches.epoch(1))  # one fixed batch of sample pairs

    def loss() -> float:
        with torch.no_grad():
            return trainer.loss_fn(trainer.network(batch.images), batch).item()

    set_train_mode(trainer.network)
    before = loss()
    for _ in range(8):
        trainer._step(batch)
    assert loss() < 0.7 * before
    assert trainer.progress.global_step == 8


def test_a_run_writes_a_loadable_model_directory_with_a_calibrated_threshold(trained, tmp_path):
    config, result, _, _ = trained
    meta = json.loads((result.model_dir / "model.json").read_text())
    assert {"weights.pt", "model.json", "config.yaml"} <= {p.name for p in result.model_dir.iterdir()}
    model = load_model_dir(result.model_dir)
    assert model.threshold == pytest.approx(result.threshold) == pytest.approx(meta["threshold"])
    assert model.fingerprint == meta["fingerprint"]
    assert meta["start_weights"] == "resnet18:none" and meta["best_epoch"] == result.metrics["best_epoch"]
    # the threshold is the accuracy-best one on the validation pairs, for the saved weights
    _, val, _ = load_records(config.data, config.seed)
    pairs = generate_pairs(val, config.data.val_pairs, seed=config.seed, n_folds=10)
    paths = sorted({p for pair in pairs for p in (pair.path1, pair.path2)})
    scores = pair_scores(
        embed_paths(model, paths, progress=False, num_workers=0), {p: i for i, p in enumerate(paths)}, pairs
    )
    assert best_threshold(scores, [p.same for p in pairs]) == pytest.approx(result.threshold, abs=1e-5)
    assert not {r.identity for r in val} & {r.identity for r in load_records(config.data, config.seed)[0]}
    assert [row["epoch"] for row in result.history] == [0, 1, 2]
    assert all(np.isfinite(row["train_loss"]) for row in result.history[1:])


def test_a_run_is_logged_to_mlflow(trained):
    _, result, run, client = trained
    assert run.data.tags["facerec.start_weights"] == "resnet18:none"
    assert run.data.params["strategy.kind"] == "full" and run.data.params["model.input_size"] == "32"
    assert len(client.get_metric_history(run.info.run_id, "train_loss")) == 2
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val_auc")] == [0, 1, 2]
    assert run.data.metrics["threshold"] == pytest.approx(result.threshold)
    assert run.data.metrics["images_per_s"] > 0
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"model", "plots", "history.json"} <= artifacts
    assert {a.path for a in client.list_artifacts(run.info.run_id, "model")} >= {"model/weights.pt", "model/model.json"}
    assert {a.path for a in client.list_artifacts(run.info.run_id, "plots")} == {
        "plots/train_loss.png",
        "plots/validation.png",
    }


def test_checkpoint_round_trip(trained):
    config, result, _, _ = trained
    state = torch.load(result.model_dir.parent / CHECKPOINT_FILE, map_location="cpu", weights_only=True)
    assert state["epoch"] == 2 and state["global_step"] == 4
    assert state["config"] == to_dict(config)
    fresh = create_embedder("resnet18", input_size=32, seed=123)
    fresh.load_state_dict(state["model"])  # strict: every key fits the plain architecture
    assert all(torch.equal(fresh.state_dict()[k], v) for k, v in state["model"].items())
    assert len(state["optimizer"]["state"]) > 0 and state["scheduler"]["last_epoch"] == 4

    rng = rng_state()
    draws = (torch.rand(3), np.random.rand(3), __import__("random").random())
    set_rng_state(rng)
    assert torch.equal(torch.rand(3), draws[0]) and np.array_equal(np.random.rand(3), draws[1])
    assert __import__("random").random() == draws[2]


def test_resume_after_a_crash_reaches_the_same_weights(trained, tmp_path, mlflow_store, monkeypatch):
    _, straight, _, _ = trained  # the same tiny config, run without interruption
    original = Checkpointer.save

    def save_then_crash(self, *args):
        original(self, *args)
        raise KeyboardInterrupt("simulated crash after epoch 1")

    monkeypatch.setattr(Checkpointer, "save", save_then_crash)
    with pytest.raises(KeyboardInterrupt):
        train(tiny(tmp_path / "b"))
    monkeypatch.setattr(Checkpointer, "save", original)
    assert torch.load(tmp_path / "b" / "tiny" / CHECKPOINT_FILE, weights_only=True)["epoch"] == 1

    resumed = train(tiny(tmp_path / "b", "resume=true"))
    final = [
        torch.load(p / CHECKPOINT_FILE, weights_only=True)["model"]
        for p in (straight.model_dir.parent, tmp_path / "b" / "tiny")
    ]
    assert final[0].keys() == final[1].keys()
    assert all(torch.allclose(final[0][k].float(), final[1][k].float(), atol=1e-6) for k in final[0])
    assert [row["epoch"] for row in resumed.history] == [0, 1, 2]
    assert resumed.history[1]["train_loss"] == pytest.approx(straight.history[1]["train_loss"])
    run = mlflow.MlflowClient().get_run(resumed.run_id)
    assert "facerec.resumed_from_run" in run.data.tags


def test_resume_and_restart_are_refused_where_they_would_mix_runs(trained):
    _config, result, _, _ = trained
    output = str(result.model_dir.parent.parent)
    with pytest.raises(ConfigError, match="already holds a checkpoint"):
        Trainer(load_config(TrainConfig, None, [*TINY, f"output={output}"]))
    with pytest.raises(ConfigError, match="loss.margin"):
        Trainer(load_config(TrainConfig, None, [*TINY, f"output={output}", "resume=true", "loss.margin=0.3"]))
    with pytest.raises(ConfigError, match="does not exist"):
        Trainer(load_config(TrainConfig, None, [*TINY, f"output={output}", "resume=true", "run_name=other"]))


# ------------------------------------------------------------------ strategies
@pytest.fixture(scope="module")
def clip():
    return create_embedder("clip-vit-b-32", input_size=64)


def test_lora_trains_only_adapters_and_merges_into_the_plain_architecture(clip):
    model = copy.deepcopy(clip)
    plain_keys = set(model.state_dict())
    apply_strategy(model, StrategyConfig(kind="lora", lora_rank=4, lora_alpha=8))
    width = 768
    per_block = 4 * (width + 3 * width) + 4 * (width + width)  # A and B of in_proj (3D x D) and out_proj (D x D)
    assert parameter_counts(model)["trainable"] == 12 * per_block
    assert all(
        isinstance(m, LoRA) == any(p.requires_grad for p in m.parameters(recurse=False))
        for m in model.modules()
        if list(m.parameters(recurse=False))
    )

    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(model(x), clip(x), atol=1e-5)  # B = 0: starts at the pretrained function
        for m in model.modules():
            if isinstance(m, LoRA):
                m.lora_B.normal_(std=0.02)
        adapted = model(x)
    assert not torch.allclose(adapted, clip(x), atol=1e-3)
    assert merge_lora(model) == 24
    assert set(model.state_dict()) == plain_keys
    with torch.no_grad():
        assert torch.allclose(model(x), adapted, atol=1e-4)


def test_last_n_and_linear_probe_parameter_counts(clip):
    last = copy.deepcopy(clip)
    apply_strategy(last, StrategyConfig(kind="last_n", n_blocks=2))
    expected = sum(p.numel() for b in last.blocks()[-2:] for p in b.parameters())
    assert parameter_counts(last)["trainable"] == expected > 0

    with pytest.raises(ConfigError, match="head"):
        apply_strategy(copy.deepcopy(clip), StrategyConfig(kind="linear"))  # CLIP's default head is Identity
    probe = copy.deepcopy(clip)
    probe.head = make_head("linear", 512, 128)  # what model.options.head=linear builds
    apply_strategy(probe, StrategyConfig(kind="linear"))
    assert parameter_counts(probe)["trainable"] == 512 * 128
    with pytest.raises(ConfigError, match="n_blocks"):
        apply_strategy(copy.deepcopy(clip), StrategyConfig(kind="last_n", n_blocks=99))


def test_cnn_strategies_freeze_batchnorm_and_refuse_lora():
    model = create_embedder("resnet18", input_size=32)
    with pytest.raises(ConfigError, match="no attention layers"):
        apply_strategy(model, StrategyConfig(kind="lora"))
    model = create_embedder("resnet18", input_size=32)
    apply_strategy(model, StrategyConfig(kind="last_n", n_blocks=1))
    set_train_mode(model)
    assert not model.backbone.layer1[0].bn1.training and model.backbone.layer4[0].bn1.training
    groups = {g["name"]: g for g in param_groups(model, lr=1e-4, head_lr=1e-2, weight_decay=0.1)}
    assert set(groups) == {"backbone", "backbone_no_decay", "head"}  # the head is a bias-free Linear
    assert groups["head"]["lr"] == 1e-2 and groups["backbone"]["lr"] == 1e-4
    assert groups["backbone_no_decay"]["weight_decay"] == 0.0 and groups["backbone"]["weight_decay"] == 0.1
    trained = {id(p) for g in groups.values() for p in g["params"]}
    assert trained == {id(p) for p in [*model.backbone.layer4.parameters(), *model.head.parameters()]}


@pytest.mark.parametrize("augment", ["light", "strong"])
def test_crops_decoded_once_train_exactly_as_files_read_at_every_step(tmp_path, augment):
    weights = []
    for decode in ("once", "per_step"):
        config = tiny(tmp_path / decode, f"data.decode={decode}", f"data.augment={augment}", "loss.kind=supcon")
        trainer = Trainer(config)
        assert (trainer.batches.cache is not None) == (decode == "once")
        trainer._train_epoch(1, deadline=None)
        weights.append({k: v.clone() for k, v in trainer.model.state_dict().items()})
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


class _ProjectedSupCon(torch.nn.Module):
    """An objective with its own parameters (as a distillation projection would have)."""

    def __init__(self) -> None:
        super().__init__()
        self.projection = torch.nn.Linear(512, 16, bias=False)
        self.loss = SupConLoss(0.1)

    def forward(self, embeddings, batch):
        assert batch.index.shape == batch.flipped.shape == (len(embeddings),)  # per-image look-ups are possible
        return self.loss(self.projection(embeddings), batch.labels)


def test_an_objective_with_parameters_is_optimised_and_checkpointed(tmp_path, monkeypatch):
    import facerec.training.trainer as trainer_module

    monkeypatch.setattr(trainer_module, "make_loss", lambda config, **context: _ProjectedSupCon())
    trainer = Trainer(tiny(tmp_path, "loss.kind=supcon", "epochs=1"))
    before = trainer.loss_fn.projection.weight.detach().clone()
    trainer._train_epoch(1, deadline=None)
    assert not torch.equal(before, trainer.loss_fn.projection.weight)
    trainer.checkpointer.save(trainer._stateful(), trainer.progress, None)
    saved = torch.load(trainer.checkpointer.path, weights_only=True)
    assert torch.equal(saved["loss"]["projection.weight"], trainer.loss_fn.projection.weight.detach())


def test_the_weight_average_follows_the_live_weights_at_its_decay(tmp_path):
    trainer = Trainer(tiny(tmp_path, *FIXED_BATCH, "optim.ema=0.75"))
    batch = next(trainer.batches.epoch(1))
    set_train_mode(trainer.network)
    trainer._step(batch)  # the first update copies the live weights
    first = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}
    trainer._step(batch)
    average, live = trainer.ema.embedder.state_dict(), trainer.model.state_dict()
    floats = [k for k, v in live.items() if v.is_floating_point()]
    assert floats and any(not torch.equal(first[k], live[k]) for k in floats)
    for k in floats:
        torch.testing.assert_close(average[k], 0.75 * first[k] + 0.25 * live[k])
    assert not any(p.requires_grad for p in trainer.ema.parameters())  # the optimizer never moves it


def test_a_run_with_a_weight_average_keeps_the_average_logs_the_live_figures_and_resumes_it(tmp_path, mlflow_store):
    kept = []
    original = Checkpointer.save_best

    def record(self, model):
        kept.append(model)
        original(self, model)

    trainer = Trainer(tiny(tmp_path, "optim.ema=0.9"))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Checkpointer, "save_best", record)
        result = trainer.fit()
    assert kept and all(model is trainer.ema.embedder for model in kept)  # the average, never the live weights
    assert all({"live_val_auc", "live_val_accuracy", "val_auc"} <= row.keys() for row in result.history[1:])
    state = torch.load(result.model_dir.parent / CHECKPOINT_FILE, map_location="cpu", weights_only=True)
    assert int(state["ema"]["n_averaged"]) == 4  # one update per step: 2 epochs x 2 steps

    resumed = Trainer(tiny(tmp_path, "optim.ema=0.9", "resume=true", "epochs=3"))
    restored = resumed.ema.state_dict()
    assert restored.keys() == state["ema"].keys()
    assert all(torch.equal(restored[k].cpu(), v) for k, v in state["ema"].items())


def test_a_weight_average_decay_outside_0_1_is_refused():
    for decay in (0.0, 1.0, 1.5):
        config = load_config(TrainConfig, None, [*TINY, f"optim.ema={decay}"])
        assert problems(config) == [f"optim.ema is the average's decay per step and must be in (0, 1), got {decay}"]


def test_amp_off_trains_in_fp32_on_every_device():
    assert autocast_dtype(torch.device("cpu"), False) is None
    assert autocast_dtype(torch.device("cuda"), False) is None
    assert precision_name(None) == "fp32"


@pytest.mark.parametrize("native", [True, False])
def test_amp_on_the_cpu_is_bf16_only_where_the_cpu_computes_bf16_natively(monkeypatch, native):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: native)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    expected = torch.bfloat16 if native else None
    assert precision.native_cpu_bf16() is native
    assert autocast_dtype(torch.device("cpu"), True) is expected
    assert precision_name(expected) == ("bf16" if native else "fp32")


def test_bf16_steps_lower_the_loss_keep_fp32_weights_and_give_the_loss_fp32(tmp_path, monkeypatch):
    monkeypatch.setattr(precision, "native_cpu_bf16", lambda: True)  # emulated where not native: slower, same maths
    trainer = Trainer(tiny(tmp_path, *FIXED_BATCH, "loss.kind=supcon", "amp=true"))
    assert trainer.amp_dtype is torch.bfloat16 and not trainer.scaler.is_enabled()
    assert run_params(trainer)["run"]["precision"] == "bf16"
    seen: list[torch.dtype] = []  # the dtypes the loss is given
    produced: list[torch.dtype] = []  # the dtypes the network's first convolution gives in a step
    trainer.loss_fn.register_forward_pre_hook(lambda _, args: seen.append(args[0].dtype))
    conv = next(m for m in trainer.model.modules() if isinstance(m, torch.nn.Conv2d))
    conv.register_forward_hook(lambda *hook: produced.append(hook[-1].dtype))
    batch = next(trainer.batches.epoch(1))

    def loss() -> float:
        with torch.no_grad():
            return trainer.loss_fn(trainer.network(batch.images), batch).item()

    trainer.network.train()
    before = loss()
    produced.clear()
    for _ in range(8):
        trainer._step(batch)
    assert loss() < 0.8 * before
    assert produced[:8] == [torch.bfloat16] * 8 and set(seen) == {torch.float32}  # network in bf16, loss in fp32
    assert all(p.dtype == torch.float32 for p in trainer.model.parameters())
