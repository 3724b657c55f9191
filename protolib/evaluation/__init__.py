"""Evaluation of runs: exactness and accuracy, fidelity, intervention, faithfulness, ProtoEval."""
