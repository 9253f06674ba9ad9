"""What a server does with the gradients it is pushed: the pluggable update rule (handler).

ps-lite calls this the server's request handle; here a handler is a small class with
`init_state(value)` and `apply(value, grad, state)`. `value`, `grad` and every state array
are 2-D (rows x width) in the type the arithmetic runs in, so the same rule serves a dense
block (all its rows) and a sparse push (only the rows named), and per-row state such as
Adam's step count stays per row: an embedding row that is rarely pushed keeps its own
bias correction, as it should.

    handler       value after one applied gradient g (already summed over the round in BSP)
    sum           g                        the aggregation service (BytePS): pull = the sum
    accumulate    value + g                d2l's push: every push adds to the stored value
    sgd           value - lr (g + wd value)
    momentum      b = mu b + g;  value - lr b               (nesterov: value - lr (g + mu b))
    adam          m, v moments; value - lr m^ / (sqrt(v^) + eps), per-row step for m^, v^
    adagrad       s = s + g^2;  value - lr g / (sqrt(s) + eps)

`rescale` multiplies g first (1/W turns BSP's sum of W gradients into their mean).
A worker names a handler by name and parameters (`"adam"`, `("sgd", {"lr": 0.1})`), or
passes an instance; the server builds its own from the name, so a custom handler is one
`@register("name")` away, in a module every rank imports.
"""
from __future__ import annotations

import numpy as np

HANDLERS: dict[str, type] = {}


def register(name: str):
    def wrap(cls):
        cls.name = name
        HANDLERS[name] = cls
        return cls
    return wrap


class Handler:
    name = "?"
    floats_only = True       # optimizers need real arithmetic; sum/accumulate work on ints

    def __init__(self, rescale: float = 1.0, **params):
        self.rescale = float(rescale)
        self.params = {"rescale": self.rescale, **params}

    def init_state(self, value: np.ndarray) -> dict[str, np.ndarray]:
        return {}

    def apply(self, value: np.ndarray, grad: np.ndarray, state: dict) -> None:
        raise NotImplementedError

    def scaled(self, grad: np.ndarray) -> np.ndarray:
        return grad if self.rescale == 1.0 else grad * self.rescale

    def spec(self) -> tuple[str, dict]:
        return self.name, dict(self.params)


@register("sum")
class Sum(Handler):
    floats_only = False

    def apply(self, value, grad, state):
        value[...] = self.scaled(grad)


@register("accumulate")
class Accumulate(Handler):
    floats_only = False

    def apply(self, value, grad, state):
        value += self.scaled(grad).astype(value.dtype, copy=False)


@register("sgd")
class SGD(Handler):
    def __init__(self, lr: float = 0.01, weight_decay: float = 0.0, rescale: float = 1.0):
        super().__init__(rescale, lr=lr, weight_decay=weight_decay)
        self.lr, self.weight_decay = lr, weight_decay

    def apply(self, value, grad, state):
        g = self.scaled(grad)
        if self.weight_decay:
            g = g + self.weight_decay * value
        value -= (self.lr * g).astype(value.dtype, copy=False)


@register("momentum")
class Momentum(Handler):
    def __init__(self, lr: float = 0.01, momentum: float = 0.9, nesterov: bool = False,
                 rescale: float = 1.0):
        super().__init__(rescale, lr=lr, momentum=momentum, nesterov=nesterov)
        self.lr, self.momentum, self.nesterov = lr, momentum, nesterov

    def init_state(self, value):
        return {"buffer": np.zeros_like(value)}

    def apply(self, value, grad, state):
        g = self.scaled(grad)
        b = state["buffer"]
        b *= self.momentum
        b += g
        step = g + self.momentum * b if self.nesterov else b
        value -= (self.lr * step).astype(value.dtype, copy=False)


@register("adam")
class Adam(Handler):
    def __init__(self, lr: float = 1e-3, beta1: float = 0.9, beta2: float = 0.999,
                 eps: float = 1e-8, rescale: float = 1.0):
        super().__init__(rescale, lr=lr, beta1=beta1, beta2=beta2, eps=eps)
        self.lr, self.beta1, self.beta2, self.eps = lr, beta1, beta2, eps

    def init_state(self, value):
        return {"m": np.zeros_like(value), "v": np.zeros_like(value),
                "step": np.zeros((value.shape[0], 1), dtype=np.int64)}

    def apply(self, value, grad, state):
        g = self.scaled(grad)
        m, v, step = state["m"], state["v"], state["step"]
        step += 1
        m *= self.beta1
        m += (1 - self.beta1) * g
        v *= self.beta2
        v += (1 - self.beta2) * g * g
        m_hat = m / (1 - self.beta1 ** step)
        v_hat = v / (1 - self.beta2 ** step)
        value -= (self.lr * m_hat / (np.sqrt(v_hat) + self.eps)).astype(value.dtype, copy=False)


@register("adagrad")
class Adagrad(Handler):
    def __init__(self, lr: float = 0.01, eps: float = 1e-10, rescale: float = 1.0):
        super().__init__(rescale, lr=lr, eps=eps)
        self.lr, self.eps = lr, eps

    def init_state(self, value):
        return {"sum_sq": np.zeros_like(value)}

    def apply(self, value, grad, state):
        g = self.scaled(grad)
        state["sum_sq"] += g * g
        value -= (self.lr * g / (np.sqrt(state["sum_sq"]) + self.eps)).astype(value.dtype,
                                                                              copy=False)


def as_spec(handler) -> tuple[str, dict]:
    """(name, params) of a handler given as a name, a (name, params) pair or an instance."""
    if isinstance(handler, Handler):
        return handler.spec()
    if isinstance(handler, str):
        name, params = handler, {}
    else:
        name, params = handler
    build(name, params)                 # unknown names and bad parameters fail at the worker
    return name, dict(params)


def build(name: str, params: dict) -> Handler:
    if name not in HANDLERS:
        raise ValueError(f"unknown server handler {name!r} (known: {', '.join(HANDLERS)}; "
                         f"add one with ps.optim.register)")
    try:
        return HANDLERS[name](**params)
    except TypeError as exc:
        raise ValueError(f"handler {name!r}: {exc}") from None
