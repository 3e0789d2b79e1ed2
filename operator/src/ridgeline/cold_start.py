"""The predicted cold start of a replica: a new worker pod pulls the serving image, downloads
the checkpoint into its cache, loads it onto the device, and Ray and Serve place the replica.
A new node's boot (a pool scaling from zero) is not counted: it depends on the cloud.

Every figure is a stated constant with its source; the replica measures its own download and
load (``ray_ridgeline_replica_startup_seconds``) to hold them against."""

from __future__ import annotations

import math

from ridgeline.api.plan import ColdStart

GB = 1e9
# The serving images, unpacked: this repository's own virtual environment holds the same
# packages (torch with its CUDA wheels, Ray, transformers) in 6.4 GB; the CUDA base image adds
# a few hundred MB. The CPU image's torch has no CUDA libraries (about 1.5 GB with Ray).
GPU_IMAGE_BYTES = 7 * GB
CPU_IMAGE_BYTES = 2 * GB
# Pull and unpack: containerd unpacks a layer at the speed of one gzip stream, about 100 MB/s
# on one core (an assumption: the image's one large layer bounds the pull).
PULL_BYTES_PER_S = 100e6
# Weights: 8 parallel ranged GETs (ServingArgs.download_parallelism), each at the ~100 MB/s
# one S3 request gets (AWS's S3 performance guidelines: 85-90 MB/s per request) made
# 0.49 GB/s in docs/benchmarks.md ("Weight loading from a local S3 server", capped streams).
DOWNLOAD_BYTES_PER_S = 0.49e9
# Load: safetensors from the page cache through transformers' loader onto the device; an
# assumption of 1 GB/s until a GPU run measures the replicas' `load` phase.
LOAD_BYTES_PER_S = 1e9
# The node weight cache: the checkpoint read from the node's own disk instead of the store.
# An assumption: 1 GB/s, the top throughput of an AWS EBS gp3 volume (1,000 MiB/s provisioned;
# AWS's EBS volume types page) and well under one local NVMe SSD's sequential read (2-7 GB/s);
# a gp3 volume at its 125 MiB/s baseline reads slower than the download (docs/operator.md,
# "Node weight cache": put the node root on a fast disk).
NODE_DISK_READ_BYTES_PER_S = 1e9
# Pod start, Ray joining and Serve placing the replica: 19 s measured on the test cluster
# (docs/test-cluster.md: a new worker pod 11 s after the request, its container 8 s later).
START_S = 20.0
# The longest a request waits for a starting replica before it is answered 503 with
# Retry-After: below the 60 s idle timeout of common load balancers (AWS ALB, nginx's
# proxy_read_timeout), so the client gets Ridgeline's answer rather than the balancer's 504.
WAIT_CAP_S = 50.0
# ...and no longer than half again the predicted cold start: past that, something is wrong.
WAIT_FACTOR = 1.5


def predict(
    checkpoint_bytes: int, gpu: bool, node_cache: bool = False, image_on_node: bool = False
) -> ColdStart:
    """``node_cache``: also the figure with the checkpoint on the node; ``image_on_node``: the
    replica's image is the node cache agent's, so the node has pulled it already."""
    image = GPU_IMAGE_BYTES if gpu else CPU_IMAGE_BYTES
    pull = image / PULL_BYTES_PER_S
    download = checkpoint_bytes / DOWNLOAD_BYTES_PER_S
    load = checkpoint_bytes / LOAD_BYTES_PER_S
    total = pull + download + load + START_S
    read = checkpoint_bytes / NODE_DISK_READ_BYTES_PER_S
    cached = (
        {
            "node_cache_seconds": round((0 if image_on_node else pull) + read + load + START_S, 1),
            "node_cache_read_seconds": round(read, 1),
        }
        if node_cache
        else {}
    )
    return ColdStart(
        seconds=round(total, 1),
        image_pull_seconds=round(pull, 1),
        download_seconds=round(download, 1),
        load_seconds=round(load, 1),
        start_seconds=START_S,
        basis=(
            f"{image / GB:.0f} GB image at {PULL_BYTES_PER_S / 1e6:.0f} MB/s (assumed), "
            f"{checkpoint_bytes / GB:.1f} GB checkpoint downloaded at "
            f"{DOWNLOAD_BYTES_PER_S / GB:.2f} GB/s (docs/benchmarks.md, 8 streams) and loaded "
            f"at {LOAD_BYTES_PER_S / GB:.0f} GB/s (assumed), {START_S:.0f} s pod and Ray start "
            "(docs/test-cluster.md); a new node's boot not counted"
            + (
                f"; from the node cache, read at {NODE_DISK_READ_BYTES_PER_S / GB:.0f} GB/s "
                "from the node's disk (assumed) instead of the download"
                + (", the image already on the node (the agent's)" if image_on_node else "")
                if node_cache
                else ""
            )
        ),
        **cached,
    )


def wait_bound_seconds(cold_start: ColdStart) -> float:
    """How long a request may wait for a starting replica before a 503 with Retry-After."""
    return float(min(WAIT_CAP_S, math.ceil(WAIT_FACTOR * cold_start.seconds)))
