"""The one Jinja environment of mwa's HTML pages (the report, `mwa search --html`, `mwa serve`).

Autoescape is on for every template: captions, labels, file and run names are user data and appear as text, never
as markup (only values wrapped in ``Markup`` by mwa itself, such as its own SVG charts, are inserted as they are).
Undefined names are errors, so a template and the code that fills it cannot drift apart silently.
"""

from __future__ import annotations

import functools

import jinja2

from mwa_cli.resources import TEMPLATES, package_file


@functools.lru_cache(maxsize=1)
def environment() -> jinja2.Environment:
    """The environment loading mwa's packaged templates (`mwa_cli.resources`)."""
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(package_file(TEMPLATES))),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def get_template(name: str) -> jinja2.Template:
    """One of mwa's packaged templates (``report.html.j2``, ``search.html.j2``, ``serve.html.j2``)."""
    return environment().get_template(name)
