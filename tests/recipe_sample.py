"""The recipe's sample workflow (step 8, ``sample-workflow.json``), for every test that uses it.

Kept here once, as the recipe's text; ``RECIPE_SAMPLE`` is that text parsed, field order kept.
"""

from __future__ import annotations

import json
from typing import Any

SAMPLE_JSON = """\
{
    "name": "Molecular Dynamics Simulation",
    "description": "Multi-stage molecular dynamics workflow with checkpointing",
    "global_config": {
        "checkpoint_interval": 600,
        "max_retry_attempts": 3,
        "spot_strategy": "diversified"
    },
    "tasks": [
        {
            "id": "data-preprocessing",
            "name": "Data Preprocessing",
            "type": "batch",
            "container_image": "scientific-computing:preprocessing",
            "command": ["python", "/app/preprocess.py"],
            "vcpus": 2,
            "memory": 4096,
            "nodes": 1,
            "environment": {
                "INPUT_PATH": "/mnt/efs/raw_data",
                "OUTPUT_PATH": "/mnt/efs/processed_data"
            },
            "checkpoint_enabled": true,
            "spot_enabled": true
        },
        {
            "id": "equilibration",
            "name": "System Equilibration",
            "type": "batch",
            "container_image": "scientific-computing:md-simulation",
            "command": ["mpirun", "gromacs", "equilibrate"],
            "vcpus": 8,
            "memory": 16384,
            "nodes": 4,
            "depends_on": ["data-preprocessing"],
            "environment": {
                "INPUT_PATH": "/mnt/efs/processed_data",
                "OUTPUT_PATH": "/mnt/efs/equilibration"
            },
            "checkpoint_enabled": true,
            "spot_enabled": true,
            "retry_attempts": 2
        },
        {
            "id": "production-run",
            "name": "Production MD Run",
            "type": "batch",
            "container_image": "scientific-computing:md-simulation",
            "command": ["mpirun", "gromacs", "mdrun"],
            "vcpus": 16,
            "memory": 32768,
            "nodes": 8,
            "depends_on": ["equilibration"],
            "environment": {
                "INPUT_PATH": "/mnt/efs/equilibration",
                "OUTPUT_PATH": "/mnt/efs/production",
                "SIMULATION_TIME": "1000000"
            },
            "checkpoint_enabled": true,
            "spot_enabled": true,
            "retry_attempts": 3,
            "backoff_multiplier": 2.5
        },
        {
            "id": "analysis",
            "name": "Trajectory Analysis",
            "type": "batch",
            "container_image": "scientific-computing:analysis",
            "command": ["python", "/app/analyze.py"],
            "vcpus": 4,
            "memory": 8192,
            "nodes": 2,
            "depends_on": ["production-run"],
            "environment": {
                "INPUT_PATH": "/mnt/efs/production",
                "OUTPUT_PATH": "/mnt/efs/results"
            },
            "checkpoint_enabled": false,
            "spot_enabled": true
        }
    ]
}
"""

RECIPE_SAMPLE: dict[str, Any] = json.loads(SAMPLE_JSON)
