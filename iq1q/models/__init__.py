"""Layer 2 of iq1q: model files and whole models, built on the kernel library.

The kernel library (``iq1q`` itself: formats, tensors, matmul, backends) never imports
this package; these modules import it.

* ``gguf_io``    GGUF files in and out (public as ``iq1q.gguf_io``)
* ``tokenizer``  a GGUF model's vocabulary as a SentencePiece tokenizer
* ``model``      the numpy forward pass of the architectures the runner knows
* ``chunks``     the built-in text and how a text is cut into evaluation chunks
* ``imatrix``    importance matrices: computing, reading and writing them
* ``quantize``   ``iq1q quantize``: a GGUF model's block weights to an IQ1 type
* ``perplexity`` ``iq1q perplexity``: float and per (weight, activation) pair
"""
