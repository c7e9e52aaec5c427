"""Fused CPU kernels for the elementwise parts of a training step, generated once by `torch.compile`.

On CPU the matmuls of a step already run at about the machine's peak (fast/linear.py). What remains
is elementwise work, which eager PyTorch does one operation (one pass over memory) at a time, and some
of it slowly: GPT-2's tanh GELU costs several times the exact one, because `tanh` is slow. Each kernel is one
function that inductor (`torch.compile`'s compiler) turns into one loop nest:

- `gelu(h)`: GPT-2's GELU, 0.5·h·(1 + tanh u) with u = sqrt(2/π)(h + 0.044715h³), computed as the equal
  h·sigmoid(2u) (exp is fast where tanh is not). The same pass writes the derivative, so the backward
  is one multiply and the pre-activation `h` need not be kept.
- `softmax(scores, bias, scale)`: attention's scaling, mask and softmax in one pass; its backward in
  one pass too.
- `cross_entropy(logits, targets, grad_out)`: one chunk of the loss: each row's loss (fp32) and
  d loss / d logits (softmax minus one-hot), written into a buffer that the chunks share (fresh memory
  of that size costs page faults).

All arithmetic is fp32, rounded once to the input dtype at the end. The kernels run when: CPU; fp32 or
bf16; a gradient is wanted (inference stays eager: generating text never waits for a compiler); large
enough to pay for the call (a compiled call costs ~20 us); not inside a model that is itself being
compiled (there inductor fuses the plain operations); the environment variable `MINIGPT_COMPILE` is not
`0`; and compiling works (inductor needs a C++ compiler: if compiling fails, one warning line says why
and eager PyTorch runs from then on). Compiled kernels are cached on disk by PyTorch, so only a
machine's first run pays the compile time (seconds). tests/test_kernels.py checks each kernel against
fp64; bench/RESULTS.md has the speed.

Paths with spaces: inductor writes some paths into the compiler's command line unquoted (its cache folder,
torch's library folder), so a clone (and its .venv) whose path has a space would not compile.
`_spaceless_paths` points both at space-free places in the temp folder first (a temp folder (TMPDIR) with
a space still fails: inductor keeps its precompiled headers there; then the warning says so). Waiting for
inductor's compile workers is bounded (COMPILE_WAIT_S, for the whole process where the user set no bound);
with one compile thread (a 1-CPU machine) inductor runs the compiler in-process without a time limit,
which this module cannot bound.
"""
from __future__ import annotations

import getpass
import hashlib
import math
import os
import tempfile
import warnings
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

ENABLED = os.environ.get("MINIGPT_COMPILE", "1") != "0"
MIN_NUMEL = 1 << 15  # smaller tensors run eagerly: a compiled call costs ~20 us
_C = 2 * math.sqrt(2 / math.pi)  # sigmoid(_C * (h + 0.044715 h^3)) = (1 + tanh(u)) / 2
_COMPILED: dict[Callable, Callable] = {}
_broken = False  # set when compiling failed: eager from then on
_prepared = False  # set once _spaceless_paths has run
COMPILE_WAIT_S = 300  # longest wait for inductor's compile workers (unless TORCHINDUCTOR_COMPILE_WORKER_WAIT_TIMEOUT)


def applies(x: torch.Tensor) -> bool:
    """Whether a kernel runs for input `x` (see the module docstring)."""
    return (ENABLED and not _broken and x.device.type == "cpu" and x.dtype in (torch.float32, torch.bfloat16)
            and x.numel() >= MIN_NUMEL
            and not torch.compiler.is_compiling())


def _has_space(path: str) -> bool:
    """Whether `path` has whitespace (which splits it in a command line that does not quote it)."""
    return any(c.isspace() for c in path)


def _space_free_temp() -> str | None:
    """A writable temp folder whose path has no whitespace (for the compiler's command line), or None."""
    for folder in (tempfile.gettempdir(), "/tmp", "/var/tmp"):
        if not _has_space(folder) and os.path.isdir(folder) and os.access(folder, os.W_OK):
            return folder
    return None


def _space_free_link(target: str, base: str) -> str:
    """A symlink in `base` (no whitespace) to the folder `target`, created if missing; one per target."""
    link = os.path.join(base, "minigpt-torch-lib-" + hashlib.sha1(target.encode()).hexdigest()[:12])
    try:
        os.symlink(target, link)
    except FileExistsError:  # made by an earlier run (or a parallel one): fine if it points at `target`
        pass
    if os.path.realpath(link) != os.path.realpath(target):
        raise OSError(f"{link} exists and does not point at {target}")
    return link


def _spaceless_paths() -> None:
    """Keeps whitespace out of the compiler's command line, where inductor does not quote every path:
    its cache folder (TORCHINDUCTOR_CACHE_DIR, by default in the temp folder) and torch's library folder
    (passed as -L<path>; inside the .venv of a clone whose path has a space) move to space-free places."""
    from torch.utils import cpp_extension

    base = _space_free_temp()
    if base is None:
        return
    cache = os.environ.get("TORCHINDUCTOR_CACHE_DIR") or tempfile.gettempdir()
    if _has_space(cache):
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = os.path.join(base, "torchinductor_" + _user())
    lib = getattr(cpp_extension, "TORCH_LIB_PATH", "")
    if _has_space(lib):
        cpp_extension.TORCH_LIB_PATH = _space_free_link(lib, base)  # read by inductor at each compile


def _user() -> str:
    """The user's name for folder names (as inductor names its default cache folder)."""
    try:
        return "".join(c if c.isalnum() or c in "-_." else "_" for c in getpass.getuser())
    except (KeyError, OSError):
        return f"uid_{os.getuid()}" if hasattr(os, "getuid") else "user"


def _gist(e: Exception) -> str:
    """A compile error in one line: its first line, and the compiler's first complaint where quoted
    (inductor's message holds the whole command and all of the compiler's output, often 1,000s of lines)."""
    lines = [line.strip() for line in str(e).splitlines() if line.strip()] or ["no message"]
    gist = f"{type(e).__name__}: {lines[0]}"
    if lines[0].endswith(":") and len(lines) > 1:  # "backend='inductor' raised:" and the error it raised
        gist += f" {lines[1]}"
    if "Output:" in lines[:-1]:
        gist += f"; {lines[lines.index('Output:') + 1]}"
    return gist if len(gist) <= 300 else gist[:297] + "..."


def _bound_the_wait() -> None:
    """Makes inductor wait at most COMPILE_WAIT_S for a compile worker (then it raises, and we run eager)
    where the user set no bound (TORCHINDUCTOR_COMPILE_WORKER_WAIT_TIMEOUT; inductor's default: forever)."""
    import torch._inductor.config as config

    if getattr(config, "compile_worker_wait_timeout", None) == 0:  # 0: unset (None: a torch without it)
        config.compile_worker_wait_timeout = COMPILE_WAIT_S


def _compile(fn: Callable) -> Callable:
    """`fn` compiled by inductor (lazily: the work happens at its first call)."""
    global _prepared
    if not _prepared:
        _prepared = True
        _spaceless_paths()
        _bound_the_wait()
    return torch.compile(fn, dynamic=True, fullgraph=True)


def _run(fn: Callable, *args):
    """The compiled `fn` on `args`, or None if compiling fails (then kernels are off, with one warning)
    or failed before."""
    global _broken
    if _broken:
        return None
    try:
        if fn not in _COMPILED:
            _COMPILED[fn] = _compile(fn)
        with torch.no_grad(), torch.autocast("cpu", enabled=False):  # one global state: fewer recompiles
            return _COMPILED[fn](*args)
    except torch._dynamo.exc.FailOnRecompileLimitHit:
        return None  # a rare mix of dtypes and shapes beyond those compiled: eager for this call
    except Exception as e:  # no compiler, an unsupported platform, a path it cannot handle: the caller runs eager
        _broken = True
        tmp = tempfile.gettempdir()
        hint = f"; the temp folder {tmp!r} has a space: set TMPDIR to one without" if _has_space(tmp) else ""
        warnings.warn(f"minigpt: compiling the fused CPU kernels failed ({_gist(e)}{hint}); running eager PyTorch "
                      "instead (slower). Set MINIGPT_COMPILE=0 to skip the attempt and this warning.", stacklevel=3)
        return None


# ---------------------------------------------------------------- GELU

def _gelu(h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x = h.float()
    s = torch.sigmoid(_C * (x + 0.044715 * x * x * x))
    d = s + x * s * (1 - s) * _C * (1 + 3 * 0.044715 * x * x)  # d y / d h
    return (x * s).to(h.dtype), d.to(h.dtype)


class _Gelu(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h):
        out = _run(_gelu, h)
        ctx.compiled = out is not None
        if not ctx.compiled:  # compiling failed: aten's GELU, whose backward needs h
            ctx.save_for_backward(h)
            return F.gelu(h, approximate="tanh")
        ctx.save_for_backward(out[1])  # the derivative
        return out[0]

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        (saved,) = ctx.saved_tensors
        if not ctx.compiled:
            return torch.ops.aten.gelu_backward(grad, saved, approximate="tanh")
        return grad * saved


def gelu(h: torch.Tensor) -> torch.Tensor:
    """GPT-2's GELU (the tanh form), `F.gelu(h, approximate="tanh")`."""
    if torch.is_grad_enabled() and h.requires_grad and applies(h):
        return _Gelu.apply(h.reshape(-1)).view(h.shape)  # flat: one shape for the compiler, whatever h's
    return F.gelu(h, approximate="tanh")


# ---------------------------------------------------------------- attention softmax

def _softmax(scores: torch.Tensor, bias: torch.Tensor | None, scale: float) -> torch.Tensor:
    x = scores.float() * scale
    if bias is not None:
        x = x + bias
    return torch.softmax(x, -1).to(scores.dtype)


def _softmax_backward(grad: torch.Tensor, p: torch.Tensor, scale: float) -> torch.Tensor:
    g, pf = grad.float(), p.float()
    return (pf * (g - (g * pf).sum(-1, keepdim=True)) * scale).to(grad.dtype)


def _eager_softmax(scores: torch.Tensor, bias: torch.Tensor | None, scale: float) -> torch.Tensor:
    x = scores * scale
    return (x if bias is None else x + bias.to(x.dtype)).softmax(-1)


class _Softmax(torch.autograd.Function):
    @staticmethod
    def forward(ctx, scores, bias, scale):
        p = _run(_softmax, scores, bias, scale)
        if p is None:
            p = _eager_softmax(scores, bias, scale)
        ctx.save_for_backward(p)
        ctx.scale = scale
        return p

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        (p,) = ctx.saved_tensors
        out = _run(_softmax_backward, grad, p, ctx.scale)
        if out is None:
            out = torch._softmax_backward_data(grad, p, -1, p.dtype) * ctx.scale
        return out, None, None


def softmax(scores: torch.Tensor, bias: torch.Tensor | None, scale: float) -> torch.Tensor:
    """Attention weights `softmax(scores * scale + bias)` over the last dim. scores (B, H, Tq, Tk); bias
    (0 = may attend, -inf = masked) (B or 1, 1, Tq, Tk), or None. Every row must keep a key.
    (An additive mask, not a boolean one: the compiled kernel is faster with it.)"""
    if torch.is_grad_enabled() and scores.requires_grad and applies(scores):
        return _Softmax.apply(scores, bias, scale)
    return _eager_softmax(scores, bias, scale)


# ---------------------------------------------------------------- cross-entropy

def _log_sum_exp(x: torch.Tensor) -> torch.Tensor:  # (n, V) fp32 -> (n, 1)
    m = x.amax(-1, keepdim=True)
    return m + torch.exp(x - m).sum(-1, keepdim=True).log()


def _cross_entropy_and_gradient(logits: torch.Tensor, targets: torch.Tensor, grad_out: torch.Tensor) -> torch.Tensor:
    x = logits.float()
    lse = _log_sum_exp(x)  # (n, 1)
    # exp recomputed rather than kept from the sum: a (n, V) fp32 temporary costs more than the exp
    p = torch.exp(x - lse)  # (n, V) softmax
    hot = torch.arange(x.shape[-1], device=x.device, dtype=torch.int32) == targets.int()[:, None]  # (n, V)
    grad_out.copy_(torch.where(hot, p - 1, p))
    return (lse - x.gather(1, targets[:, None])).squeeze(-1)  # (n,)


def cross_entropy(logits: torch.Tensor, targets: torch.Tensor, grad_out: torch.Tensor) -> torch.Tensor | None:
    """Per-row cross-entropy (n,), in fp32, of logits (n, V) against targets (n,) in [0, V), and its
    gradient with respect to the logits (softmax minus one-hot), written into `grad_out` (n, V). None
    where the kernel does not run: the caller's eager code does the work."""
    return _run(_cross_entropy_and_gradient, logits, targets, grad_out) if applies(logits) else None
