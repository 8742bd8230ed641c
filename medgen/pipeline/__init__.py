"""Declarative pipelines: ``medgen run pipelines/NAME.yaml`` runs ordered steps as one MLflow
parent run with nested step runs, resumable step by step."""

from medgen.pipeline.spec import PipelineSpec, load_pipeline

__all__ = ["PipelineSpec", "load_pipeline"]
