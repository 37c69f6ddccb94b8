"""The registered model as MLflow loads it: a base model with the fused unlearning layer on.

MLflow logs this file as the model's code ("models from code"), so the registry stores no
pickled Python object, only this source, the base model folder and the fused layer folder.
Loading it needs the `eul` package installed next to MLflow.
"""

from __future__ import annotations

from typing import Any

import mlflow
from mlflow.pyfunc import PythonModel

BASE_ARTIFACT = "base"
LAYER_ARTIFACT = "layer"


class UnlearnedTextModel(PythonModel):
    """Texts in, greedy outputs of the unlearned model out."""

    def load_context(self, context: Any) -> None:
        from eul.stores.registry.loading import load_model_folders

        self.model = load_model_folders(
            context.artifacts[BASE_ARTIFACT], context.artifacts[LAYER_ARTIFACT]
        )

    def predict(
        self, context: Any, model_input: list[str], params: dict[str, Any] | None = None
    ) -> list[str]:
        """`model_input` is a list of texts or a one-column DataFrame (MLflow converts it)."""
        return self.model.generate(list(model_input))


mlflow.models.set_model(UnlearnedTextModel())
