"""The README's Python quick start runs as written (in a scratch folder, with the shipped model)."""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_readme_quick_start_runs(tmp_path, monkeypatch):
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert len(blocks) == 1, "the README has one Python quick start"
    code = blocks[0].replace('"checkpoints/minigpt-gutenberg"', repr(str(ROOT / "checkpoints" / "minigpt-gutenberg")))
    monkeypatch.chdir(tmp_path)  # what it saves lands here
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)
    assert scope["loss"].item() > 0 and scope["logits"].shape[-1] == scope["model"].config.vocab_size
    assert (tmp_path / "my-prefix" / "prefix.safetensors").is_file()
    assert (tmp_path / "my-peft-adapter" / "adapter_model.safetensors").is_file()
