"""Weight averaging (EMA of weights and batch-norm buffers) through a real MONAI trainer."""

import pytest
import torch
from monai.data import DataLoader
from ignite.engine import Events
from monai.engines import SupervisedTrainer

from kneeseg.engines import AutocastInferer, WeightAveraging
from kneeseg.networks import build_network


def _trainer(net, handlers, iterations=3):
    data = [{"image": torch.randn(1, 32, 32), "label": (torch.rand(1, 32, 32) > 0.5).float()} for _ in range(2 * iterations)]
    return SupervisedTrainer(
        device=torch.device("cpu"), max_epochs=1, train_data_loader=DataLoader(data, batch_size=2), network=net,
        optimizer=torch.optim.Adam(net.parameters(), 1e-2),
        loss_function=lambda pred, label: torch.nn.functional.cross_entropy(pred, label[:, 0].long()),
        inferer=AutocastInferer(amp=False, channels_last=True), train_handlers=handlers,
    )  # fmt: skip


def test_ema_follows_the_recursion_over_every_step_including_batchnorm_buffers():
    torch.manual_seed(0)
    net = build_network("csam_unet", width=4)
    ema = WeightAveraging(net, decay=0.9)
    snapshots = []
    trainer = _trainer(net, [ema])
    # recorded after the EMA handler (registered first) has run for this iteration
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: snapshots.append({k: v.detach().clone() for k, v in net.state_dict().items()}))
    trainer.run()
    assert len(snapshots) == 3
    expected = {k: v.clone() for k, v in snapshots[0].items()}  # the first update copies the weights
    for snap in snapshots[1:]:
        for k, v in snap.items():
            if v.is_floating_point():
                expected[k] = 0.9 * expected[k] + 0.1 * v
    averaged = ema.model.state_dict()
    for k, v in expected.items():
        if v.is_floating_point():
            assert torch.allclose(averaged[k], v, atol=1e-6), k
    assert any("running_mean" in k for k in expected)  # buffers are averaged too
    current = net.state_dict()
    assert any(not torch.allclose(averaged[k], current[k]) for k in expected if current[k].is_floating_point())
    # the averaged copy is a plain network: its state dict loads into a fresh one
    fresh = build_network("csam_unet", width=4)
    fresh.load_state_dict(ema.model.state_dict())
    # resumable: state_dict round trip
    other = WeightAveraging(build_network("csam_unet", width=4), decay=0.9)
    other.load_state_dict(ema.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(other.model.state_dict().values(), ema.model.state_dict().values()))


def test_disabled_averaging_is_the_network_itself():
    net = build_network("csam_unet", width=4)
    ema = WeightAveraging(net, decay=0.0)
    assert not ema.enabled and ema.model is net and ema.state_dict() == {}
    _trainer(net, [ema]).run()  # attaches nothing, trains normally
    with pytest.raises(ValueError, match=r"ema decay must be in \[0, 1\), got 1.0"):
        WeightAveraging(net, decay=1.0)
