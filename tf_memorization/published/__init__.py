"""The paper's released scores: their schema, their join to a run, and
the comparison of a run's estimates with them.

    released    the released files read, checked and exported
    join        a run's examples joined to the released ones
    comparison  the comparison the compare binary runs
"""
