"""A Ray cluster of two nodes on this machine and an S3 API on loopback: `pytest_plugins = ["tests.cluster_fixtures"]`.

The nodes are Ray's own (`ray.cluster_utils.Cluster`): separate raylets and object stores,
one CPU each, each with its own temporary folder, so a stage that counted on one node's files
or on the driver's folder fails here as on a real cluster. They all live on 127.0.0.1 (Ray's local-only
mode, `cli.engines.ray_runtime.pin_to_loopback`, set before the nodes start and kept for the driver
that joins them). The object store is moto's server
mode, a real HTTP S3 API on 127.0.0.1; the AWS variables are dummies, the instance metadata
lookup is off and the endpoint is loopback, so nothing talks to AWS.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.ray_fixtures import ray_processes_started

NODES = 2
CPUS_PER_NODE = 1
BUCKET = "linklens-test"
# Dummies: moto accepts any; real credentials in the environment must never reach the test server or AWS.
AWS_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_SESSION_TOKEN": "testing",
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true",
           "AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull}


@dataclass(frozen=True)
class S3Server:
    endpoint_url: str
    bucket: str

    def uri(self, prefix: str) -> str:
        return f"s3://{self.bucket}/{prefix}"

    def env(self, prefix: str) -> dict[str, str]:
        """The settings that point linklens's datasets at `prefix` of the bucket."""
        return {"LINKLENS_DATASETS_URI": self.uri(prefix), "LINKLENS_S3_ENDPOINT_URL": self.endpoint_url}


@pytest.fixture(scope="module")
def s3_server() -> Iterator[S3Server]:
    """moto's S3 server on loopback with one empty bucket; the AWS variables set for this module (and the Ray
    nodes started after it, which inherit them)."""
    import boto3
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # moto's server logs every request otherwise
    saved = {key: os.environ.get(key) for key in AWS_ENV}
    os.environ.update(AWS_ENV)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket=BUCKET)
    try:
        yield S3Server(endpoint, BUCKET)
    finally:
        server.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture(scope="module")
def two_node_ray(s3_server: S3Server) -> Iterator[Any]:
    """`ray`, joined to a fresh two-node cluster (one CPU each) for this module; the cluster is torn down after."""
    import ray
    from ray.cluster_utils import Cluster

    from cli.engines.ray_runtime import LOOPBACK_IP

    # Socket paths (under each node's session folder) must stay short: a short folder in /tmp, not pytest's.
    folders = [Path(tempfile.mkdtemp(prefix=f"lr{i}-")) for i in range(NODES)]
    with ray_processes_started():
        cluster = Cluster(initialize_head=True, head_node_args={
            "num_cpus": CPUS_PER_NODE, "include_dashboard": False, "temp_dir": str(folders[0]),
            "node_ip_address": LOOPBACK_IP})
        for folder in folders[1:]:
            cluster.add_node(num_cpus=CPUS_PER_NODE, temp_dir=str(folder), node_ip_address=LOOPBACK_IP)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, logging_level=logging.WARNING, log_to_driver=False, configure_logging=False)
    try:
        yield ray
    finally:
        ray.shutdown()
        cluster.shutdown()
        for folder in folders:
            shutil.rmtree(folder, ignore_errors=True)
