"""The generative model families, one module each (read them top to bottom like the lecture).

Importing this package registers every family in `minigen.models.base.FAMILIES`.
"""
from minigen.models.base import FAMILIES, GenerativeModel, get_family, register_family  # noqa: F401
from minigen.models import vae  # noqa: F401
from minigen.models import flow  # noqa: F401
from minigen.models import ddpm  # noqa: F401
from minigen.models import flow_matching  # noqa: F401
from minigen.models import gan  # noqa: F401
from minigen.models import pixelcnn  # noqa: F401
from minigen.models import nar  # noqa: F401
from minigen.models import classifier  # noqa: F401
