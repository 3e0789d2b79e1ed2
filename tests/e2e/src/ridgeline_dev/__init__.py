"""Developer and test tools: checkpoints made on the spot, the loopback control plane, the fake
GPU fleet. Not imported by the product."""
