"""Triton kernels of medkern's ops, registered with torch.library.triton_op.

Imported lazily (by medkern.ops when the triton backend is chosen, and by the tests), so that
``import medkern`` works without Triton. On CPU tensors they run in Triton's interpreter when
TRITON_INTERPRET=1 is set before Triton is first imported.
"""
