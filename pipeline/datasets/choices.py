"""The values the datasets' options take, free of spaCy: pipeline.config checks params.yaml against them."""
from typing import Literal

ConceptBackend = Literal["bank_match", "noun_chunks"]  # pipeline.datasets.concepts.concept_extractor
