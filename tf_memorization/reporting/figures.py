"""The report's figures: matplotlib drawings rendered to PNG bytes.

Drawn on matplotlib's Agg canvas through Figure, no pyplot state. Each figure
goes into the report's `files` ({name: PNG bytes}), which are written once
the whole page is built, so that a bad input found half way leaves no partial
report. Text drawn from an input has its `$` escaped (figure_text), so that
matplotlib never reads it as mathtext.

  * grid: labelled rows of images with captions (the example grids, the
    influence pairs, the flipped labels); memorization_cell, pair_cells,
    label_text and class_title make their cells and row titles.
  * histogram: the memorization estimates, with the ablation's variants.
"""

import io

import numpy as np

from tf_memorization.reporting import markup

DPI = 100                # every PNG of the report

# Layout of the image grids, inches.
CELL = 1.0          # image side
CELL_WIDTH = 1.2    # column pitch
CAPTION = 0.42      # two caption lines under an image
ROW_GAP = 0.12
TITLE_WIDTH = 1.1   # row titles at the left


def figure(width, height):
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top
  return Figure(figsize=(width, height), dpi=DPI)


def save(fig, files, name):
  """Renders `fig` into files[name] (the PNGs are written once the whole page
  is built: a bad input found half way leaves no partial report)."""
  buffer = io.BytesIO()
  fig.savefig(buffer, format='png', dpi=DPI)
  files[name] = buffer.getvalue()
  return name


def figure_text(value):
  """`value` as text for a figure, every `$` escaped.

  matplotlib reads text between two `$` as mathtext, so a class name or a JSON
  value such as `$\\foo$` would fail the drawing; escaped, it is drawn as is.
  """
  return markup.text(value, None).replace('$', r'\$')


def draw_image(ax, image, x, y, side):
  """Draws `image` fitted into the square at (x, y) (inches, y down)."""
  from matplotlib.patches import Rectangle  # pylint: disable=g-import-not-at-top
  if image is None:
    ax.add_patch(Rectangle((x, y), side, side, facecolor='#eeeeee',
                           edgecolor='none'))
    ax.text(x + side / 2, y + side / 2, 'no image', ha='center', va='center',
            fontsize=6, color='#888888')
    return
  image = np.asarray(image)
  height, width = image.shape[:2]
  scale = side / max(height, width)
  w, h = width * scale, height * scale
  x0, y0 = x + (side - w) / 2, y + (side - h) / 2
  small = max(height, width) * 2 <= side * DPI  # upscaled at least 2x
  kwargs = dict(extent=(x0, x0 + w, y0 + h, y0),
                interpolation='nearest' if small else 'antialiased')
  if image.ndim == 2 or image.shape[2] == 1:
    ax.imshow(image.reshape(height, width), cmap='gray', vmin=0, vmax=255,
              **kwargs)
  else:
    ax.imshow(image[..., :3], **kwargs)


def grid(files, name, rows, title_width=TITLE_WIDTH, gap_after=None):
  """One PNG of labelled image rows.

  Args:
    files: {name: PNG bytes} of the report, which gets this one.
    name: the PNG's file name.
    rows: [(row title, [cell])], a cell a dict: image (uint8 array or None),
      lines (one or two caption lines), flipped (red border and caption),
      highlight (blue border).
    title_width: inches for the row titles (0: none).
    gap_after: extra space after this many cells of each row.
  """
  from matplotlib.patches import Rectangle  # pylint: disable=g-import-not-at-top
  columns = max(len(cells) for _, cells in rows)
  gap = 0.35 if gap_after else 0.0
  row_height = CELL + CAPTION + ROW_GAP
  width = title_width + columns * CELL_WIDTH + gap + 0.1
  height = len(rows) * row_height + 0.1
  fig = figure(width, height)
  ax = fig.add_axes((0, 0, 1, 1))
  ax.set_axis_off()
  for r, (title, cells) in enumerate(rows):
    y = 0.08 + r * row_height
    if title_width:
      ax.text(0.08, y + CELL / 2, figure_text(title), ha='left',
              va='center', fontsize=9)
    for c, cell in enumerate(cells):
      x = (title_width + c * CELL_WIDTH + (CELL_WIDTH - CELL) / 2
           + (gap if gap_after and c >= gap_after else 0.0))
      draw_image(ax, cell.get('image'), x, y, CELL)
      if cell.get('flipped'):
        edge, line_width = '#d62728', 3.0
      elif cell.get('highlight'):
        edge, line_width = '#1f77b4', 2.0
      else:
        edge, line_width = '#999999', 0.6
      ax.add_patch(Rectangle((x, y), CELL, CELL, fill=False,
                             edgecolor=edge, linewidth=line_width))
      for number, line in enumerate(cell.get('lines', ())):
        ax.text(x + CELL / 2, y + CELL + 0.05 + 0.17 * number,
                figure_text(line),
                ha='center', va='top', fontsize=7,
                color='#d62728' if cell.get('flipped') and not number
                else 'black')
  ax.set_xlim(0, width)
  ax.set_ylim(height, 0)
  ax.set_aspect('auto')
  return save(fig, files, name)


def label_text(inputs, i):
  """Training example i's label (of an estimates.Estimates), as a caption."""
  label, original = (int(inputs.train_labels[i]),
                     int(inputs.original_train_labels[i]))
  return (f'label {label} (was {original})' if label != original
          else f'label {label}')


def memorization_cell(inputs, images, i):
  """The grid cell of training example i: its image (of a
  report_images.Images), label and memorization ± stderr."""
  return {'image': images.train(i),
          'flipped': bool(inputs.train_labels[i] !=
                          inputs.original_train_labels[i]),
          'lines': [label_text(inputs, i),
                    f'{inputs.memorization[i]:.2f} ± {inputs.stderr[i]:.2f}']}


def pair_cells(inputs, images, j, entries, controlled):
  """A grid row of the influence pairs: test example j, then its training
  examples `entries` ([(index, influence, stderr or None, is_pair)]), each
  marked controlled (in `controlled`, {(train, test)}), raw or top-k."""
  cells = [{'image': images.test(j),
            'lines': [f'test #{j}', f'label {int(inputs.test_labels[j])}']}]
  for i, value, stderr, is_pair in entries:
    kind = ('controlled' if (int(i), int(j)) in controlled else
            'raw' if is_pair else 'top-k')
    cells.append({
        'image': images.train(i),
        'flipped': bool(inputs.train_labels[i] !=
                        inputs.original_train_labels[i]),
        'highlight': is_pair,
        'lines': [label_text(inputs, i),
                  f'infl {value:.2f}' + (f' ± {stderr:.2f}'
                                         if stderr is not None else ''),
                  kind]})
  return cells


def class_title(images, c):
  """A grid row's title: class c, and its name where the dataset has one."""
  names = images.class_names  # the dataset's (any text: grid escapes it)
  if names and 0 <= c < len(names) and markup.text(names[c]) != str(c):
    return f'class {c}\n{markup.text(names[c])[:16]}'
  return f'class {c}'


def histogram(files, inputs, summary, variants):
  """memorization_histogram.png, or None when no example has an estimate.

  Args:
    files: {name: PNG bytes} of the report.
    inputs: the estimates.Estimates.
    summary: summary.json (a report_inputs.Json).
    variants: [(name, trials, memorization [n])] overlaid (the ablation's).
  """
  full = inputs.memorization[np.isfinite(inputs.memorization)]
  if not len(full):
    return None
  fig = figure(6.5, 4.0)
  ax = fig.add_subplot()
  low = min([-0.1, float(full.min())] +
            [float(np.nanmin(v)) for _, _, v in variants
             if np.isfinite(v).any()])
  edges = np.linspace(-1.025, 1.025, 42)  # bins centred on multiples of 0.05
  edges = edges[np.searchsorted(edges, low, side='right') - 1:]
  k = markup.text(summary.get('num_trials'))
  ax.hist(full, bins=edges, histtype='stepfilled', alpha=0.5, log=True,
          label=figure_text(f'full network ({k} trials)'))
  for name, trials, values in variants:
    values = values[np.isfinite(values)]
    ax.hist(values, bins=edges, histtype='stepfilled', alpha=0.5, log=True,
            label=figure_text(f'{name} ({trials} trials)'))
  # Drawn only when it is a number (the run table shows whatever it is).
  threshold = markup.number(summary.obj('pair_thresholds').get(
      'memorization'))
  if threshold is not None:
    ax.axvline(threshold, color='grey', ls='--', lw=0.8,
               label=f'memorization {threshold:g}')
  from matplotlib import ticker  # pylint: disable=g-import-not-at-top
  ax.yaxis.set_major_locator(ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
  ax.yaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f'{v:g}'))
  ax.yaxis.set_minor_formatter(ticker.NullFormatter())
  ax.set_xlabel('memorization estimate')
  ax.set_ylabel('training examples (log scale)')
  ax.set_title('Memorization of the training examples')
  ax.legend(fontsize=8)
  fig.tight_layout()
  return save(fig, files, 'memorization_histogram.png')
