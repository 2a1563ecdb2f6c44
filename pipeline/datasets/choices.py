"""The values the datasets' options take, free of spaCy: pipeline.config checks params.yaml against them."""
from typing import Literal

ConceptBackend = Literal["bank_match", "noun_chunks"]  # pipeline.datasets.concepts.concept_extractor
ConceptSource = Literal["coco_captions", "img2dataset"]  # the concepts stage's captions (pipeline.stages.concepts)
