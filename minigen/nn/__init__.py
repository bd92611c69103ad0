"""Neural-network building blocks: Module/Parameter (module.py), layers (layers.py), initialisers (init.py)."""
from minigen.nn import init  # noqa: F401
from minigen.nn.layers import *  # noqa: F401,F403
from minigen.nn.module import Buffer, Module, Parameter, frozen  # noqa: F401
