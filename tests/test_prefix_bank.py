"""PrefixBank: in a mixed-task batch every row equals running that example alone with its task's prefix."""
import pytest
import torch

from minigpt import GPT
from prefix import PrefixBank, PrefixConfig, PrefixTuner

P = 4


@pytest.fixture
def base(tiny_dir):
    return GPT.from_pretrained(tiny_dir).eval()


@pytest.fixture
def tuners(base):
    torch.manual_seed(0)
    return {"e2e": PrefixTuner(base, PrefixConfig(P)).eval(),
            "webnlg": PrefixTuner(base, PrefixConfig(P, prefix_projection=True, encoder_hidden_size=16)).eval(),
            "dart": PrefixTuner(base, PrefixConfig(P, depth="embedding")).eval()}


TASKS = ["webnlg", "e2e", "dart", "e2e"]
LENGTHS = [6, 3, 5, 4]


def left_padded():
    """Four prompts of different lengths, left-padded into one batch: (ids, mask, list of prompts)."""
    g = torch.Generator().manual_seed(1)
    prompts = [torch.randint(1, 101, (n,), generator=g) for n in LENGTHS]
    T = max(LENGTHS)
    ids = torch.zeros(len(prompts), T, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, p in enumerate(prompts):
        ids[i, T - len(p):], mask[i, T - len(p):] = p, 1
    return ids, mask, prompts


def test_mixed_batch_forward_equals_each_example_alone(tuners):
    bank = PrefixBank(tuners)
    ids, mask, prompts = left_padded()
    with torch.no_grad():
        batch = bank(ids, TASKS, attention_mask=mask)
        for i, (task, p) in enumerate(zip(TASKS, prompts)):
            alone = tuners[task](p[None])[0]
            torch.testing.assert_close(batch[i, -len(p):], alone, atol=1e-5, rtol=0)
        same_task = bank(ids, ["e2e"] * len(TASKS), attention_mask=mask)
    assert not torch.allclose(same_task[0, -LENGTHS[0]:], batch[0, -LENGTHS[0]:])  # the task matters


@pytest.mark.parametrize("num_beams", [1, 3])
def test_mixed_batch_generate_equals_each_example_alone(tuners, num_beams):
    bank = PrefixBank(tuners)
    ids, mask, prompts = left_padded()
    out = bank.generate(ids, TASKS, 6, attention_mask=mask, num_beams=num_beams)
    for i, (task, p) in enumerate(zip(TASKS, prompts)):
        alone = tuners[task].generate(p[None], 6, num_beams=num_beams)[0, len(p):]
        assert torch.equal(out[i, ids.shape[1]:ids.shape[1] + len(alone)], alone)


def test_bank_refuses_tasks_it_cannot_mix(base, tuners):
    with pytest.raises(ValueError, match="a bank needs equal lengths"):
        PrefixBank({**tuners, "short": PrefixTuner(base, PrefixConfig(P - 1))})
    with pytest.raises(ValueError, match="a bank needs the same layers"):
        PrefixBank({**tuners, "shallow": PrefixTuner(base, PrefixConfig(P, depth=[0]))})
    with pytest.raises(ValueError, match="another model object"):
        PrefixBank({**tuners, "copy": PrefixTuner(GPT(base.config), PrefixConfig(P))})
    bank = PrefixBank(tuners)
    ids, mask, _ = left_padded()
    with pytest.raises(KeyError, match="unknown tasks"):
        bank(ids, ["e2e", "e2e", "e2e", "xsum"], attention_mask=mask)
    with pytest.raises(ValueError, match="one task name per row"):
        bank(ids, ["e2e"], attention_mask=mask)
