Record = tuple
