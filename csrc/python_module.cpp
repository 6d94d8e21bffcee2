// `import wmkernels._C` loads this shared library, whose static initialisers
// (schema.cpp and each kernel of csrc/cpu) register the torch.ops.wmkernels.* operators. The Python
// module itself is empty: every op is reached through torch.ops.
#include <Python.h>

extern "C" {
PyMODINIT_FUNC PyInit__C(void) {
  static struct PyModuleDef module_def = {
      PyModuleDef_HEAD_INIT,
      "_C",  // m_name
      "wmkernels C++ ops, registered as torch.ops.wmkernels.*",  // m_doc
      -1,    // m_size
      nullptr,  // m_methods
  };
  return PyModule_Create(&module_def);
}
}
