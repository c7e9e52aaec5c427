"""minigpt.fast.optim.adamw: PyTorch's fused AdamW where it runs, the same update as the unfused one."""
import torch

from minigpt.fast.optim import adamw


def test_fused_on_cpu_and_equal_to_the_unfused_update():
    torch.manual_seed(0)
    a = [torch.nn.Parameter(torch.randn(64, 32)), torch.nn.Parameter(torch.randn(32))]
    b = [torch.nn.Parameter(p.detach().clone()) for p in a]
    start = [p.detach().clone() for p in a]
    fused = adamw([{"params": a[:1], "weight_decay": 0.1}, {"params": a[1:], "weight_decay": 0.0}], lr=1e-2)
    plain = torch.optim.AdamW([{"params": b[:1], "weight_decay": 0.1}, {"params": b[1:], "weight_decay": 0.0}],
                              lr=1e-2)
    assert fused.defaults["fused"] is True and plain.defaults["fused"] is None
    for _ in range(5):
        grads = [torch.randn_like(p) for p in a]
        for p, q, g in zip(a, b, grads):
            p.grad, q.grad = g.clone(), g.clone()
        fused.step()
        plain.step()
    for p, q, p0 in zip(a, b, start):
        assert (p - p0).abs().mean() > 1e-3  # the steps moved the parameters
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


def test_not_fused_where_the_kernel_does_not_run():
    meta = [torch.nn.Parameter(torch.zeros(3, device="meta"))]
    assert adamw(meta, lr=1e-3).defaults["fused"] is False
    assert adamw([torch.nn.Parameter(torch.zeros(3))], lr=1e-3, fused=False).defaults["fused"] is False
