"""AMP policy: bf16 autocast on CPU under amp=true, fp32 under amp=false, through a real MONAI trainer."""

import pytest
import torch
from ignite.engine import Events
from monai.data import DataLoader
from monai.engines import SupervisedTrainer

from kneeseg.execution import AmpPolicy, AutocastInferer, cpu_supports_bf16, resolve_amp
from kneeseg.networks import build_network


def test_resolve_amp_values():
    assert resolve_amp(False, "cpu").dtype is None
    assert resolve_amp("false", "cpu").describe() == "cpu fp32"
    cuda = resolve_amp("auto", "cuda")
    assert cuda.dtype == torch.float16 and cuda.grad_scaler and cuda.monai_amp
    cpu = resolve_amp(True, "cpu")
    assert cpu.dtype == torch.bfloat16 and not cpu.grad_scaler and not cpu.monai_amp
    auto = resolve_amp("auto", "cpu")
    assert auto.dtype == (torch.bfloat16 if cpu_supports_bf16() else None)
    with pytest.raises(ValueError, match="amp must be 'auto', true or false"):
        resolve_amp("sometimes", "cpu")


def _train_one_epoch(amp):
    torch.manual_seed(0)
    net = build_network("csam_unet", width=4)
    seen = []
    conv = net.encoder[0].convs[0].conv
    conv.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    data = [{"image": torch.randn(1, 32, 32), "label": (torch.rand(1, 32, 32) > 0.5).float()} for _ in range(4)]
    policy = AmpPolicy.resolve(amp, "cpu")
    trainer = SupervisedTrainer(
        device=torch.device("cpu"),
        max_epochs=1,
        train_data_loader=DataLoader(data, batch_size=2),
        network=net,
        optimizer=torch.optim.Adam(net.parameters(), 1e-3),
        loss_function=lambda pred, label: torch.nn.functional.cross_entropy(pred, label[:, 0].long()),
        inferer=AutocastInferer(policy=policy, channels_last=True),
        amp=policy.monai_amp,
    )
    before = [p.detach().clone() for p in net.parameters()]
    trainer.run()
    changed = any(not torch.equal(a, b) for a, b in zip(before, net.parameters()))
    return seen, trainer.state.output, changed


def test_trainer_forward_runs_in_bf16_under_amp_true():
    seen, output, changed = _train_one_epoch(True)
    assert seen and set(seen) == {torch.bfloat16}
    assert output[0]["pred"].dtype == torch.float32  # cast back for loss and metrics (decollated)
    assert changed and torch.isfinite(torch.as_tensor(output[0]["loss"]))


def test_trainer_forward_runs_in_fp32_under_amp_false():
    seen, output, changed = _train_one_epoch(False)
    assert seen and set(seen) == {torch.float32}
    assert changed


class _TrainerWithCpuScaler(SupervisedTrainer):
    """MONAI's ``Trainer.run()`` makes its GradScaler when the run starts (CUDA only), after the
    handlers were attached; this trainer does the same with a CPU GradScaler, so the checkpoint
    handlers meet the scaler here as they do on a GPU (tests/test_cuda.py runs the real one)."""

    init_scale = 65536.0

    def run(self) -> None:
        from monai.engines.workflow import Workflow

        self.scaler = torch.amp.GradScaler("cpu", init_scale=self.init_scale)
        Workflow.run(self)  # what Trainer.run() does after making its scaler


def test_last_checkpoint_saves_the_scaler_made_at_run_start_and_resume_restores_it(tmp_path):
    from kneeseg.handlers.checkpoint import LastCheckpointSaver, ResumeFromCheckpoint

    def trainer(epochs, init_scale, resume):
        torch.manual_seed(0)
        net = build_network("unet", width=4)
        opt = torch.optim.Adam(net.parameters(), 1e-3)
        data = [{"image": torch.randn(1, 32, 32), "label": (torch.rand(1, 32, 32) > 0.5).float()} for _ in range(4)]
        t = _TrainerWithCpuScaler(
            device=torch.device("cpu"), max_epochs=epochs, train_data_loader=DataLoader(data, batch_size=2),
            network=net, optimizer=opt, amp=False,
            loss_function=lambda pred, label: torch.nn.functional.cross_entropy(pred, label[:, 0].long()),
        )  # fmt: skip
        t.init_scale = init_scale
        LastCheckpointSaver(tmp_path, {"network": net, "optimizer": opt}).attach(t)
        ResumeFromCheckpoint(tmp_path / "last.pt", {"network": net, "optimizer": opt}, enabled=resume).attach(t)
        return t

    first = trainer(1, 256.0, resume=False)
    first.run()
    saved = torch.load(tmp_path / "last.pt", weights_only=True)
    assert saved["scaler"]["scale"] == 256.0

    resumed = trainer(2, 65536.0, resume=True)
    scales = []
    resumed.add_event_handler(Events.ITERATION_STARTED, lambda e: scales.append(e.scaler.get_scale()))
    resumed.run()
    assert resumed.state.epoch == 2 and scales and set(scales) == {256.0}  # the saved scale, not a fresh one
