"""Mail HTML: sanitising for display (nh3) and plain-text derivation for search and previews.

`sanitize_html` runs on output, never at ingest: the raw HTML is stored as received
(RELIABILITY §7 rule 5). Remote images are blocked by default: their `src` is removed, so
opening a message never tells the sender when, or from which address, it was read (tracking
pixels). `remote_images="keep"` keeps them with `referrerpolicy="no-referrer"`; a caller
that offers "load remote images" should route them through an image proxy.

`html_to_text` first lets nh3 (html5ever, linear time) reduce the document to a handful of
well-formed structural tags, then walks that with the stdlib `html.parser`. The stdlib
parser never sees the original markup, whose malformed shapes can make it quadratic
(CVE-2025-6069; our Python 3.11.7 is not patched).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from functools import lru_cache
from html.parser import HTMLParser
from typing import Literal
from urllib.parse import unquote

import nh3

RemoteImages = Literal["block", "keep"]

# fmt: off
_TAGS = frozenset({
    "a", "abbr", "address", "b", "bdi", "bdo", "big", "blockquote", "br", "caption", "center",
    "cite", "code", "col", "colgroup", "dd", "del", "dfn", "div", "dl", "dt", "em",
    "figcaption", "figure", "font", "h1", "h2", "h3", "h4", "h5", "h6", "hr", "i", "img", "ins",
    "kbd", "li", "mark", "ol", "p", "pre", "q", "s", "samp", "small", "span", "strike",
    "strong", "sub", "sup", "table", "tbody", "td", "tfoot", "th", "thead", "tr", "tt", "u",
    "ul", "var", "wbr",
})
# fmt: on
# Removed together with everything inside them.
# fmt: off
_CLEAN_CONTENT = frozenset({
    "script", "style", "title", "iframe", "frame", "frameset", "noframes", "object", "embed",
    "applet", "noembed", "template", "svg", "math", "select", "textarea", "button",
})
# fmt: on
_CELL = {"align", "valign", "width", "height", "bgcolor", "colspan", "rowspan", "nowrap"}
_ATTRIBUTES: dict[str, set[str]] = {
    "*": {"style", "title", "dir", "lang", "align"},
    "a": {"href", "name"},
    "img": {"src", "alt", "width", "height", "border", "hspace", "vspace"},
    "table": {"width", "border", "cellpadding", "cellspacing", "bgcolor", "height"},
    "td": _CELL,
    "th": _CELL,
    "tr": {"valign", "bgcolor", "height"},
    "col": {"span", "width"},
    "colgroup": {"span", "width"},
    "font": {"color", "face", "size"},
    "ol": {"start", "type", "reversed"},
    "ul": {"type"},
    "li": {"value"},
    "blockquote": {"type"},
    "hr": {"width", "size", "noshade"},
}
_URL_SCHEMES = {"http", "https", "mailto", "cid", "data"}
# fmt: off
_STYLE_PROPERTIES = frozenset({
    "background-color", "border", "border-bottom", "border-collapse", "border-color",
    "border-left", "border-radius", "border-right", "border-spacing", "border-style",
    "border-top", "border-width", "color", "direction", "display", "font", "font-family",
    "font-size", "font-style", "font-variant", "font-weight", "height", "letter-spacing",
    "line-height", "list-style-type", "margin", "margin-bottom", "margin-left", "margin-right",
    "margin-top", "max-width", "min-width", "padding", "padding-bottom", "padding-left",
    "padding-right", "padding-top", "text-align", "text-decoration", "text-indent",
    "text-transform", "vertical-align", "white-space", "width", "word-break", "word-wrap",
})
# fmt: on
# Inline images that are safe to render: raster formats only (no SVG, no HTML).
_DATA_IMAGE = re.compile(r"data:image/(?:png|gif|jpe?g|webp|bmp);base64,[A-Za-z0-9+/=\s]*\Z", re.I)
_STYLE_DANGER = re.compile(r"url\s*\(|expression|javascript|behavior|binding|@import|\\", re.I)


def _cid_key(value: str) -> str:
    return unquote(value).strip().strip("<>").strip().lower()


def _filter_style(value: str) -> str | None:
    kept: list[str] = []
    for declaration in value.split(";"):
        name, sep, val = declaration.partition(":")
        name = name.strip().lower()
        if sep and name in _STYLE_PROPERTIES and not _STYLE_DANGER.search(val):
            kept.append(f"{name}: {val.strip()}")
    return "; ".join(kept) or None


def _make_filter(
    cid_urls: Mapping[str, str], remote_images: RemoteImages
) -> Callable[[str, str, str], str | None]:
    cids = {_cid_key(key): url for key, url in cid_urls.items()}

    def attribute_filter(tag: str, attr: str, value: str) -> str | None:
        # Must never raise: nh3 would strip the attribute and report to sys.unraisablehook.
        try:
            if attr == "style":
                return _filter_style(value)
            if attr not in ("src", "href"):
                return value
            stripped = value.strip()
            scheme = stripped.split(":", 1)[0].lower() if ":" in stripped else ""
            if scheme == "cid":
                return cids.get(_cid_key(stripped.split(":", 1)[1]))
            if scheme == "data":
                return stripped if tag == "img" and _DATA_IMAGE.match(stripped) else None
            if tag == "img" and remote_images == "block":
                return None
            return value
        except Exception:  # noqa: BLE001 - dropping the attribute is the safe answer
            return None

    return attribute_filter


@lru_cache(maxsize=4)
def _cleaner(remote_images: RemoteImages) -> nh3.Cleaner:
    return _build_cleaner({}, remote_images)


def _build_cleaner(cid_urls: Mapping[str, str], remote_images: RemoteImages) -> nh3.Cleaner:
    set_values = {"img": {"referrerpolicy": "no-referrer", "loading": "lazy"}}
    # Relative URLs in mail would resolve against our origin: only our own rewritten cid
    # targets (often relative API paths) may be relative.
    ours = frozenset(cid_urls.values())

    def relative(url: str) -> str | None:
        return url if url in ours else None

    return nh3.Cleaner(
        tags=set(_TAGS),
        clean_content_tags=set(_CLEAN_CONTENT),
        attributes={tag: set(attrs) for tag, attrs in _ATTRIBUTES.items()},
        attribute_filter=_make_filter(cid_urls, remote_images),
        url_schemes=set(_URL_SCHEMES),
        link_rel="noopener noreferrer nofollow",
        set_tag_attribute_values=set_values,
        url_relative=relative,
        strip_comments=True,
    )


def sanitize_html(
    html: str,
    *,
    cid_urls: Mapping[str, str] = {},
    remote_images: RemoteImages = "block",
) -> str:
    """Sanitise mail HTML for display inside a sandboxed iframe.

    Allow-listed formatting, table and image tags; `href`/`src` schemes http, https,
    mailto and cid (plus `data:` raster images on `<img>`). `cid:` references are rewritten
    through `cid_urls` (keys are Content-IDs, with or without angle brackets) and dropped
    when unknown. Scripts, styles, frames, event handlers and `javascript:` URLs are
    removed; inline `style` keeps a list of layout properties and never `url()`.
    """
    cleaner = _build_cleaner(cid_urls, remote_images) if cid_urls else _cleaner(remote_images)
    return cleaner.clean(html)


# fmt: off
_BLOCK = frozenset({
    "address", "blockquote", "center", "dd", "div", "dl", "dt", "figcaption", "figure", "h1",
    "h2", "h3", "h4", "h5", "h6", "hr", "ol", "p", "pre", "table", "ul", "caption",
})
# fmt: on
_TEXT_TAGS = _BLOCK | {"br", "li", "tr", "td", "th", "tbody", "thead", "tfoot"}


@lru_cache(maxsize=1)
def _text_cleaner() -> nh3.Cleaner:
    return nh3.Cleaner(
        tags=set(_TEXT_TAGS),
        clean_content_tags=set(_CLEAN_CONTENT),
        attributes={},
        link_rel=None,
        strip_comments=True,
    )


class _TextExtractor(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._pre = 0
        self._cell = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "br":
            self.parts.append("\n")
        elif tag == "li":
            self.parts.append("\n- ")
        elif tag == "tr":
            self.parts.append("\n")
            self._cell = False
        elif tag in ("td", "th"):
            if self._cell:
                self.parts.append("\t")
            self._cell = True
        elif tag in _BLOCK:
            self.parts.append("\n")
            if tag == "pre":
                self._pre += 1

    def handle_endtag(self, tag: str) -> None:
        if tag in _BLOCK:
            self.parts.append("\n")
            if tag == "pre" and self._pre:
                self._pre -= 1

    def handle_data(self, data: str) -> None:
        self.parts.append(data if self._pre else _INLINE_WS.sub(" ", data))


_INLINE_WS = re.compile(r"[ \t\r\n\f\v]+")
_BLANK_LINES = re.compile(r"\n{3,}")


def html_to_text(html: str) -> str:
    """Plain text of an HTML body: block tags become line breaks, entities are unescaped,
    scripts, styles and comments are dropped."""
    extractor = _TextExtractor()
    extractor.feed(_text_cleaner().clean(html))
    extractor.close()
    text = "".join(extractor.parts).replace("\xa0", " ")
    lines = [line.strip(" ") for line in text.split("\n")]
    return _BLANK_LINES.sub("\n\n", "\n".join(lines)).strip()
