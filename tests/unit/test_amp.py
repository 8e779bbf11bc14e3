"""Mixed precision, channels-last and compile settings of the trainer, on the CPU."""

from __future__ import annotations

import copy

import pytest
import torch

from piebench import config as C
from piebench.errors import UsageError
from piebench.precision import Precision

SETS = ["eval.data.resolution=32", "eval.data.crops_per_scene=6", "train.batch_users=2", "train.per_user=2",
        "train.refs=2", "train.checkpoint_every=100"]


def _components(steps=6, **flags):
    from piebench.build import Components, build_dataset, build_losses, build_models, plan_stages
    from piebench.plugins import get_registry

    cfg = C.resolve("smoke", encoder="angular", enhancer="sa", schedule="joint", steps=steps, sets=SETS,
                     lr_enhancer=5e-4, lr_encoder=5e-5, **flags)
    cfg["train"]["stages"][0]["losses"] = {"l1": 1.0}  # image loss only: a clean decrease on one batch
    registry = get_registry()
    dataset = build_dataset(cfg, registry)
    torch.manual_seed(0)
    encoder, enhancer = build_models(cfg, registry, dataset)
    stages, _ = plan_stages(cfg, encoder, enhancer)
    losses = build_losses(stages, registry, dataset, encoder, cfg["train"]["refs"])
    return cfg, Components(dataset=dataset, encoder=encoder, enhancer=enhancer, losses=losses, stages=stages)


class OneBatch:
    """A sampler that serves the same batch every step (so the loss must fall)."""

    def __init__(self, dataset, seed=0):
        from piebench.data.sampler import TrainSampler

        self.inner = TrainSampler(dataset, batch_users=2, per_user=2, refs=2, seed=seed)
        self.batch = self.inner.sample()

    def sample(self):
        return self.batch

    def state_dict(self):
        return self.inner.state_dict()

    def load_state_dict(self, state):
        self.inner.load_state_dict(state)


def _trainer(tmp_path, steps=6, **flags):
    from piebench.train import Trainer

    cfg, comps = _components(steps, **flags)
    return Trainer(comps, OneBatch(comps.dataset), cfg, tmp_path, device="cpu", log_path=tmp_path / "log.jsonl",
                   progress=False)


def _fp16_autocast_on_cpu() -> bool:
    try:
        with torch.autocast("cpu", dtype=torch.float16):
            return torch.nn.functional.conv2d(torch.rand(1, 1, 4, 4), torch.rand(1, 1, 3, 3)).dtype == torch.float16
    except (RuntimeError, TypeError):
        return False


def test_bf16_autocast_trains_and_the_loss_falls(tmp_path):
    trainer = _trainer(tmp_path, amp="bf16")
    dtypes = []
    conv = next(m for m in trainer.c.enhancer.modules() if isinstance(m, torch.nn.Conv2d))
    conv.register_forward_hook(lambda m, i, o: dtypes.append(o.dtype))
    trainer.fit()
    losses = [e["loss"] for e in trainer.log]
    assert dtypes and set(dtypes) == {torch.bfloat16}  # the forward really ran in bf16
    assert all(torch.isfinite(torch.tensor(losses))) and losses[-1] < 0.8 * losses[0]
    assert all(p.dtype == torch.float32 for p in trainer.c.enhancer.parameters())  # master weights stay float32
    assert trainer.precision.scaler is None and trainer.state_dict()["scaler"] is None


@pytest.mark.skipif(not _fp16_autocast_on_cpu(), reason="this torch build has no float16 autocast on the CPU")
def test_fp16_uses_the_grad_scaler_and_skips_overflow_steps(tmp_path):
    trainer = _trainer(tmp_path, steps=3, amp="fp16")
    scaler = trainer.precision.scaler
    assert isinstance(scaler, torch.amp.GradScaler)
    calls = {"scale": 0, "step": 0, "unscale_": 0}
    for name in calls:
        original = getattr(scaler, name)

        def spy(*args, _name=name, _original=original, **kwargs):
            calls[_name] += 1
            return _original(*args, **kwargs)

        setattr(scaler, name, spy)
    trainer.fit()
    assert calls == {"scale": 3, "step": 3, "unscale_": 3}
    assert trainer.log[-1]["loss"] < trainer.log[0]["loss"]
    assert trainer.state_dict()["scaler"]["scale"] == scaler.get_scale()
    # a scale that overflows the fp16 gradients: the step is skipped (not a failure) and the scale backs off
    scaler.update(1e38)
    before = {k: v.clone() for k, v in trainer.c.enhancer.state_dict().items()}
    entry = trainer.train_step(trainer.c.stages[0])
    assert entry.get("skipped") is True and scaler.get_scale() < 1e38
    assert all(torch.equal(before[k], v) for k, v in trainer.c.enhancer.state_dict().items())


def test_fp16_scale_survives_a_checkpoint(tmp_path):
    trainer = _trainer(tmp_path, steps=1, amp="fp16")
    trainer._make_optimizer(0)
    trainer.train_step(trainer.c.stages[0])  # the scaler's state exists after its first step
    trainer.precision.scaler.update(1024.0)
    state = trainer.state_dict()
    other = _trainer(tmp_path / "b", steps=1, amp="fp16")
    other.load_checkpoint(state)
    assert other.precision.scaler.get_scale() == 1024.0


def test_channels_last_gives_the_same_outputs_and_step(tmp_path):
    _, comps = _components()
    batch = OneBatch(comps.dataset).batch
    enc, enh = comps.encoder.eval(), comps.enhancer.eval()
    enc_cl, enh_cl = copy.deepcopy(enc), copy.deepcopy(enh)
    precision = Precision("cpu", channels_last=True)
    precision.prepare([enc_cl, enh_cl])
    assert next(m for m in enh_cl.modules() if isinstance(m, torch.nn.Conv2d)).weight.is_contiguous(
        memory_format=torch.channels_last)
    cl_batch = precision.batch(batch)
    assert cl_batch.input.is_contiguous(memory_format=torch.channels_last) and cl_batch.refs.query is cl_batch.input
    with torch.no_grad():
        ref = enh(batch.input, enc(batch.refs))
        out = enh_cl(cl_batch.input, enc_cl(cl_batch.refs))
    assert torch.allclose(out, ref, atol=1e-5) and (out - batch.input).abs().max() > 1e-3
    a, b = _trainer(tmp_path / "a"), _trainer(tmp_path / "b", channels_last=True)
    for t in (a, b):
        t._make_optimizer(0)
        t._set_modes(t.c.stages[0])
        t.train_step(t.c.stages[0])
    for (name, p), q in zip(a.c.enhancer.named_parameters(), b.c.enhancer.parameters(), strict=True):
        assert torch.allclose(p, q, atol=1e-5), name


@pytest.mark.slow  # a cold torch.compile (inductor, C++ codegen with gcc) takes ~30 s on a 2-core CPU
def test_compile_really_compiles_in_place_and_keeps_state_dict_keys():
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(4, 3, 1))
    eager = copy.deepcopy(module)
    keys = list(module.state_dict())
    Precision("cpu", compile=True).prepare([module])
    assert module._compiled_call_impl is not None  # nn.Module.compile ran: calls go through torch.compile
    assert list(module.state_dict()) == keys  # checkpoints stay loadable by an uncompiled model
    x = torch.rand(2, 3, 8, 8)
    from torch._dynamo.utils import counters

    counters.clear()
    y = module(x)
    assert counters["stats"]["unique_graphs"] >= 1  # dynamo captured and compiled a graph
    assert torch.allclose(y, eager(x), atol=1e-5)
    y.square().mean().backward()  # training through the compiled module reaches the parameters
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in module.parameters())


def test_settings_are_validated_and_keyed():
    with pytest.raises(UsageError, match="bf16, fp16"):
        Precision("cpu", amp="fp8")
    base = C.resolve("smoke", encoder="angular", enhancer="sa")
    amp = C.resolve("smoke", encoder="angular", enhancer="sa", amp="bf16")
    elsewhere = C.resolve("smoke", encoder="angular", enhancer="sa", store_device="cpu", store_fraction=0.3)
    assert "amp" not in base["train"] and amp["train"]["amp"] == "bf16"
    assert C.run_key(amp) != C.run_key(base)  # numerics differ: another run
    assert C.run_key(elsewhere) == C.run_key(base)  # where the store lives never changes a batch
    with pytest.raises(UsageError, match="train.amp"):
        C.resolve("smoke", encoder="angular", enhancer="sa", sets=["train.stages.0.steps=1"], amp="fp32")
    with pytest.raises(UsageError, match="store-fraction"):
        C.resolve("smoke", encoder="angular", enhancer="sa", store_fraction=1.5)
