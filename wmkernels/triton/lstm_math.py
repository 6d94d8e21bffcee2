"""The cell math of the Triton kernels, written once (contract §1.1).

``tanh`` is ``1 − 2 / (1 + e^2x)``: ``libdevice.tanh`` does not run under the
Triton interpreter, and this form runs in both. Near saturation it keeps
1 − |tanh| to a few ulps of itself (``2·σ(2x) − 1`` did not: its error of a
few ulps of 1 became a relative 2e-5 in the backward's 1 − v² at |x| ≈ 3.4).
It cancels near 0 (absolute error ~1e-7, a relative 1e-4 at |x| = 1e-3), so
|x| < 0.4 takes tanh's odd Taylor polynomial through x^13 instead
(truncation below 1e-8 relative). e^2x = inf gives 1, never NaN.
"""
import triton
import triton.language as tl


@triton.jit
def sigmoid(x):
    return 1.0 / (1.0 + tl.exp(-x))


@triton.jit
def tanh(x):
    t = x * x
    p = 21844.0 / 6081075.0
    p = p * t - 1382.0 / 155925.0
    p = p * t + 62.0 / 2835.0
    p = p * t - 17.0 / 315.0
    p = p * t + 2.0 / 15.0
    p = p * t - 1.0 / 3.0
    near = x + x * t * p
    return tl.where(tl.abs(x) < 0.4, near, 1.0 - 2.0 / (1.0 + tl.exp(2.0 * x)))


@triton.jit
def lstm_cell_forward(pre_i, pre_f, pre_g, pre_o, c_prev):
    """Pre-activations and c_prev (fp32 tiles) -> (i, f, g, o, c, h)."""
    i = sigmoid(pre_i)
    f = sigmoid(pre_f)
    g = tanh(pre_g)
    o = sigmoid(pre_o)
    c = f * c_prev + i * g
    h = o * tanh(c)
    return i, f, g, o, c, h


@triton.jit
def lstm_cell_backward(i, f, g, o, c_prev, c, grad_h, grad_c):
    """Gate activations, c_prev, c and the gradients of h and c (fp32 tiles)
    -> gradients of the four pre-activations and of c_prev."""
    tanh_c = tanh(c)
    dc = grad_c + grad_h * o * (1.0 - tanh_c * tanh_c)
    d_i = dc * g * i * (1.0 - i)
    d_f = dc * c_prev * f * (1.0 - f)
    d_g = dc * i * (1.0 - g * g)
    d_o = grad_h * tanh_c * o * (1.0 - o)
    return d_i, d_f, d_g, d_o, dc * f
