"""The README and docs/: every relative link leads to a file and heading
that exist, the README stays a guide (≤ 300 lines), and no doc keeps a
hand-counted table of module line counts."""

import glob
import os
import re

from conftest import REPO

DOCS = [os.path.join(REPO, 'README.md')] + sorted(
    glob.glob(os.path.join(REPO, 'docs', '*.md')))
README_MAX_LINES = 300


def _without_code(text):
  return re.sub(r'```.*?```', '', text, flags=re.S)


def _slug(heading):
  """The anchor a Markdown heading gets (GitHub's rule)."""
  heading = re.sub(r'[^\w\- ]', '', heading.strip().lower())
  return heading.replace(' ', '-')


def _anchors(path):
  text = _without_code(open(path, encoding='utf-8').read())
  return {_slug(m.group(1))
          for m in re.finditer(r'^#+\s+(.*)$', text, flags=re.M)}


def _broken_links(paths):
  broken = []
  for path in paths:
    text = _without_code(open(path, encoding='utf-8').read())
    for match in re.finditer(r'\]\(([^)\s]+)\)', text):
      link = match.group(1)
      if re.match(r'^[a-z]+:', link):  # https:, mailto:
        continue
      target, _, anchor = link.partition('#')
      target = (os.path.normpath(os.path.join(os.path.dirname(path), target))
                if target else path)
      where = f'{os.path.relpath(path, REPO)}: ({link})'
      if not os.path.exists(target):
        broken.append(f'{where} names no file')
      elif anchor and target.endswith('.md') and anchor not in _anchors(
          target):
        broken.append(f'{where} names no heading of {os.path.basename(target)}')
  return broken


def test_every_relative_link_leads_somewhere():
  assert len(DOCS) > 1
  broken = _broken_links(DOCS)
  assert not broken, broken


def test_the_link_check_sees_a_broken_link(tmp_path):
  page = tmp_path / 'page.md'
  page.write_text('# Title here\n\n[ok](#title-here) [bad](#nothing) '
                  '[gone](missing.md) [web](https://example.org/x)\n'
                  '```\n[in code](missing_too.md)\n```\n')
  broken = _broken_links([str(page)])
  assert len(broken) == 2, broken
  assert any('(#nothing) names no heading' in b for b in broken)
  assert any('(missing.md) names no file' in b for b in broken)


def test_the_readme_is_a_guide_and_no_doc_counts_lines():
  with open(DOCS[0], encoding='utf-8') as f:
    assert len(f.read().splitlines()) <= README_MAX_LINES
  for path in DOCS:
    with open(path, encoding='utf-8') as f:
      headers = [line for line in f if line.startswith('|')
                 and re.search(r'\|\s*lines\s*\|', line)]
    assert not headers, (path, headers)
