from asyncpg.exceptions import *
from asyncpg.exceptions import __all__
