"""The cell math of the Triton kernels, written once (SPEC 1.1).

``tanh`` is ``2·σ(2x) − 1``: ``libdevice.tanh`` does not run under the
Triton interpreter, and this form runs in both.
"""
import triton
import triton.language as tl


@triton.jit
def sigmoid(x):
    return 1.0 / (1.0 + tl.exp(-x))


@triton.jit
def tanh(x):
    return 2.0 * sigmoid(2.0 * x) - 1.0


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
