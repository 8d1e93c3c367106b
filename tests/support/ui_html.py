"""Read a UI page as a browser's parser would: its elements, attributes and text."""

from __future__ import annotations

from dataclasses import dataclass
from html.parser import HTMLParser

# Elements whose URL attribute makes the browser fetch something by itself.
FETCHING = {"script": "src", "link": "href", "img": "src", "iframe": "src", "source": "src",
            "video": "src", "audio": "src", "embed": "src", "object": "data"}  # fmt: skip


@dataclass
class Element:
    """One start tag and its attributes."""

    tag: str
    attrs: dict[str, str]


class Page(HTMLParser):
    """A parsed page: every element in order, and the text outside tags."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[Element] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append(Element(tag, {k: v or "" for k, v in attrs}))

    def handle_data(self, data: str) -> None:
        self.text.append(data)

    def find(self, tag: str, **attrs: str) -> list[Element]:
        """Elements of ``tag`` whose attributes include ``attrs`` (``_`` for ``-``)."""
        wanted = {k.replace("_", "-"): v for k, v in attrs.items()}
        return [
            e for e in self.elements
            if e.tag == tag and all(e.attrs.get(k) == v for k, v in wanted.items())
        ]  # fmt: skip

    @property
    def all_text(self) -> str:
        """The page's text, as one string."""
        return "".join(self.text)


def parse(html: str) -> Page:
    """Parse a whole page."""
    page = Page()
    page.feed(html)
    page.close()
    return page


def script_risks(page: Page) -> list[str]:
    """Everything on a page that could run script other than the UI's own file."""
    risks = []
    for element in page.elements:
        for name, value in element.attrs.items():
            if name.startswith("on"):
                risks.append(f"<{element.tag} {name}=…>")
            if name in ("href", "src", "action", "formaction") and value.strip().lower().startswith(
                ("javascript:", "data:", "vbscript:")
            ):
                risks.append(f"<{element.tag} {name}={value[:40]}>")
        if element.tag == "script" and not element.attrs.get("src", "").startswith("/ui/static/"):
            risks.append("<script> that is not the UI's own file")
        if element.tag in ("style", "iframe", "object", "embed", "svg", "img", "base"):
            risks.append(f"<{element.tag}>")
        if "style" in element.attrs:
            risks.append(f"<{element.tag} style=…>")
    return risks


def fetched_urls(page: Page) -> list[str]:
    """URLs the browser would fetch on its own while loading the page."""
    return [e.attrs[FETCHING[e.tag]] for e in page.elements
            if e.tag in FETCHING and FETCHING[e.tag] in e.attrs]  # fmt: skip
