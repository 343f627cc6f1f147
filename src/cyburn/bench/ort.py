"""ONNX Runtime as a peer of cyburn.bench, when `onnxruntime` and `onnx` are installed
(pip install 'cyburn[bench]').

Each row's function, where one ONNX operator computes it, is a one-node model built here in
code and run on ONNX Runtime's CPU execution provider through io_binding: its inputs are the
row's own arrays and its outputs are bound to arrays allocated beforehand (in the rows where
cyburn allocates too, so ONNX Runtime pays no allocation there), its intra-op thread pool
has cyburn's thread count. A row whose function has no single ONNX operator (the backward
passes, masked softmax, adamw_step) has no ONNX Runtime contender and says "no op".
"""
import sys

import cyburn as cb

try:
    import onnx
    import onnxruntime
    from onnx import helper
except ImportError:          # ONNX Runtime is an optional peer
    onnxruntime = None

NAME = "onnxruntime"


def version():
    """'onnxruntime X (onnx Y)', or None when they are not installed."""
    return f"{onnxruntime.__version__} (onnx {onnx.__version__})" if onnxruntime else None


def _session(op, opset, inputs, outputs, attributes):
    """An InferenceSession of the model with one node, `op` of the default domain at `opset`,
    reading `inputs` and writing `outputs` (name -> array, for their types and shapes)."""
    def values(arrays):
        return [helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(a.dtype),
                                              a.shape) for name, a in arrays.items()]
    node = helper.make_node(op, list(inputs), list(outputs), **attributes)
    opsets = [helper.make_opsetid("", opset)]
    model = helper.make_model(helper.make_graph([node], op, values(inputs), values(outputs)),
                              opset_imports=opsets,
                              ir_version=helper.find_min_ir_version_for(opsets))
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = cb.get_num_threads()
    options.inter_op_num_threads = 1
    options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3                  # errors only
    return onnxruntime.InferenceSession(model.SerializeToString(), options,
                                        providers=["CPUExecutionProvider"])


def contender(op, opset, inputs, outputs, **attributes):
    """A callable that runs `op` (ONNX operator, opset version) once on `inputs` into
    `outputs` (name -> C-contiguous array; the outputs written in place), or None when ONNX
    Runtime is not installed or cannot run that operator (said once on stderr)."""
    if onnxruntime is None:
        return None
    try:
        session = _session(op, opset, inputs, outputs, attributes)
    except Exception as error:                  # an older onnx or onnxruntime
        _unsupported(op, opset, error)
        return None
    return _Bound(session, inputs, outputs)


class _Bound:
    """A session with its inputs and outputs bound by address (io_binding), and the arrays
    themselves, kept alive as long as the call is (ONNX Runtime holds only the addresses)."""

    def __init__(self, session, inputs, outputs):
        self.session, self.arrays = session, (inputs, outputs)
        self.binding = session.io_binding()
        for bind, arrays in ((self.binding.bind_input, inputs),
                             (self.binding.bind_output, outputs)):
            for name, a in arrays.items():
                bind(name, "cpu", 0, a.dtype.type, list(a.shape), a.ctypes.data)

    def __call__(self):
        self.session.run_with_iobinding(self.binding)


_said = set()


def _unsupported(op, opset, error):
    if (op, opset) not in _said:
        _said.add((op, opset))
        print(f"onnxruntime {onnxruntime.__version__} cannot run {op} (opset {opset}): "
              f"{str(error).splitlines()[0][:200]}", file=sys.stderr)
