"""The HTML report and every figure: the only stage that draws.

    page      `build`: the report of a workdir, one function per section
    markup    the HTML
    figures   the report's figures and those the estimate writes to
              W/estimates (matplotlib, Agg)
    images    the examples' images (tfds by id, or your source's)
"""
