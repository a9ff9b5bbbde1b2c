"""The BN paper's experiments at small scale, on the CPU: `python -m pipeline.paper mnist
[--idx DIR] ...` is Section 4.1 (a sigmoid MLP with and without BN on MNIST, or on
scikit-learn's digits: test accuracy and the drift of a sigmoid's input, Figure 1;
pipeline/paper/mnist.py), and `python -m pipeline.paper variants ...` is Section 4.2 (the
BN-Inception variants on generated data, Figure 2 and Table 2; pipeline/paper/variants.py).
Each writes its figures, a JSON of every number and a Markdown table beside the paper's
claims to its --out folder; docs/reproduction.md has the commands and our numbers.
"""
