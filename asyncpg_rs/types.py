from asyncpg.types import *
