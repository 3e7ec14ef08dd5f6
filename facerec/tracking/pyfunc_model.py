"""Model code of the facerec pyfunc flavor (MLflow "models from code": no pickle).

MLflow copies this file into every logged facerec model and runs it on load; it only
names the model class, which lives in ``facerec.tracking.pyfunc``.
"""

from mlflow.models import set_model

from facerec.tracking.pyfunc import FacerecModel

set_model(FacerecModel())
