"""Test PDFs: real papers typeset by pdflatex (two columns, running header, page numbers, references), and the
broken kinds a library folder holds (a scan without text, an encrypted file, a truncated one, a very long one),
written byte by byte so that no PDF library is needed to make them."""

import hashlib
import subprocess
import zlib
from collections.abc import Sequence
from pathlib import Path

REFERENCES = (
    "A. Vaswani et al. Attention is all you need. In NeurIPS, 2017.",
    "J. Devlin et al. BERT: pre-training of deep bidirectional transformers. In NAACL, 2019.",
)
LATEX_TIMEOUT_S = 60


WORDS = (
    "routing",
    "experts",
    "residues",
    "sequences",
    "tokens",
    "compute",
    "structure",
    "evolution",
    "attention",
    "layers",
)


def numbered_sentence(n: int) -> str:
    """A sentence that occurs once: its number and words make it findable and its place checkable."""
    return f"Observation {n} relates the {WORDS[n % 10]} of stage {n} to the {WORDS[(n * 3 + 1) % 10]} it feeds."


def latex_paper(
    folder: Path,
    name: str,
    *,
    title: str,
    abstract: str | None,
    sections: list[tuple[str, list[str]]],
    two_column: bool = True,
    references: Sequence[str] = REFERENCES,
    header: str | None = None,
    authors: str = "Ada Lovelace \\and Alan Turing",
    date: str = "",
    pdf_title: str | None = None,
) -> Path:
    """Typeset a paper with pdflatex into ``folder/name.pdf``. Everything is LaTeX source: a paragraph that starts
    with a backslash (``"\\clearpage"``, ``"\\subsection{Ablations}"``) is written as it is, so a test can put a
    fact on a known page or under a subsection. ``date`` is printed under the authors (a DOI, an arXiv id);
    ``pdf_title`` goes into the document information dictionary, as hyperref would put it."""
    body = [
        f"\\documentclass[{'twocolumn,' if two_column else ''}10pt]{{article}}",
        "\\usepackage[margin=2cm]{geometry}",
        "\\usepackage{fancyhdr}",
        "\\pagestyle{fancy}\\fancyhf{}\\renewcommand{\\headrulewidth}{0pt}",
        f"\\fancyhead[C]{{{header or ''}}}",
        "\\fancyfoot[C]{\\thepage}",
        f"\\pdfinfo{{/Title ({pdf_title})}}" if pdf_title is not None else "",
        f"\\title{{{title}}}\\author{{{authors}}}\\date{{{date}}}",
        "\\begin{document}",
        "\\maketitle",
        f"\\begin{{abstract}}\n{abstract}\n\\end{{abstract}}" if abstract is not None else "",
    ]
    for heading, paragraphs in sections:
        body.append(f"\\section{{{heading}}}")
        body += [paragraph if paragraph.startswith("\\") else f"{paragraph}\n" for paragraph in paragraphs]
    if references:
        items = "\n".join(f"\\bibitem{{r{i}}} {reference}" for i, reference in enumerate(references))
        body.append(f"\\begin{{thebibliography}}{{9}}\n{items}\n\\end{{thebibliography}}")
    body.append("\\end{document}")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.tex").write_text("\n".join(line for line in body if line) + "\n")
    command = ["pdflatex", "-interaction=nonstopmode", "-halt-on-error", f"{name}.tex"]
    result = subprocess.run(command, cwd=folder, capture_output=True, text=True, timeout=LATEX_TIMEOUT_S)
    if result.returncode != 0:
        raise RuntimeError(f"pdflatex failed on {name}.tex:\n{result.stdout[-3000:]}")
    return folder / f"{name}.pdf"


def _pdf_bytes(objects: list[bytes], *, trailer: bytes = b"") -> bytes:
    """A PDF file of the given objects (object 1 is the catalog), with a correct cross-reference table."""
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R %s>>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, trailer, xref)
    return bytes(out)


def _stream(data: bytes, extra: bytes = b"") -> bytes:
    return b"<< /Length %d %s>>\nstream\n%s\nendstream" % (len(data), extra, data)


def _text_pdf(pages: Sequence[str], key: bytes | None = None) -> list[bytes]:
    """Objects of a PDF with one line of Helvetica text per page; ``key`` encrypts its streams (RC4, 40 bits)."""
    count = len(pages)
    kids = b" ".join(b"%d 0 R" % (4 + 2 * i) for i in range(count))
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [%s] /Count %d >>" % (kids, count),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    for i, text in enumerate(pages):
        content = b"BT /F1 12 Tf 72 720 Td (%s) Tj ET" % text.encode("latin-1")
        if key is not None:
            content = _rc4(hashlib.md5(key + (5 + 2 * i).to_bytes(3, "little") + b"\0\0").digest()[:10], content)
        objects.append(
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 3 0 R >> >> "
            b"/Contents %d 0 R >>" % (5 + 2 * i)
        )
        objects.append(_stream(content))
    return objects


def many_pages_pdf(path: Path, pages: int) -> Path:
    """A PDF of ``pages`` pages, each with a line of text: what a page limit is tested with."""
    path.write_bytes(_pdf_bytes(_text_pdf([f"Page {i + 1} of a very long report." for i in range(pages)])))
    return path


def inflating_pdf(path: Path, megabytes: int) -> Path:
    """A small PDF whose page content inflates to ``megabytes`` MB: what a memory limit is tested with."""
    compressor = zlib.compressobj(1)
    blank = b" " * (1 << 20)
    content = compressor.compress(b"BT /F1 12 Tf 72 720 Td (Inflated) Tj ET")
    content += b"".join(compressor.compress(blank) for _ in range(megabytes)) + compressor.flush()
    objects = _text_pdf(["Inflated"])
    objects[4] = _stream(content, b"/Filter /FlateDecode ")
    path.write_bytes(_pdf_bytes(objects))
    return path


def truncated_pdf(path: Path) -> Path:
    """A real PDF cut in half, as an interrupted download leaves it."""
    whole = _pdf_bytes(_text_pdf(["A page that never finished downloading."] * 3))
    path.write_bytes(whole[: len(whole) // 2])
    return path


def scanned_pdf(path: Path) -> Path:
    """A page that is only an image, as a scanner makes it: no text layer."""
    width, height = 64, 64
    pixels = zlib.compress(bytes((x * 4) ^ (y * 4) for y in range(height) for x in range(width)))
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /XObject << /Im1 5 0 R >> >> "
        b"/Contents 4 0 R >>",
        _stream(b"q 468 0 0 648 72 72 cm /Im1 Do Q"),
        _stream(
            pixels,
            b"/Type /XObject /Subtype /Image /Width %d /Height %d /ColorSpace /DeviceGray /BitsPerComponent 8 "
            b"/Filter /FlateDecode " % (width, height),
        ),
    ]
    path.write_bytes(_pdf_bytes(objects))
    return path


_PADDING = bytes.fromhex("28bf4e5e4e758a4164004e56fffa01082e2e00b6d0683e802f0ca9fe6453697a")


def _rc4(key: bytes, data: bytes) -> bytes:
    state = list(range(256))
    j = 0
    for i in range(256):
        j = (j + state[i] + key[i % len(key)]) % 256
        state[i], state[j] = state[j], state[i]
    out = bytearray()
    i = j = 0
    for byte in data:
        i = (i + 1) % 256
        j = (j + state[i]) % 256
        state[i], state[j] = state[j], state[i]
        out.append(byte ^ state[(state[i] + state[j]) % 256])
    return bytes(out)


def encrypted_pdf(path: Path, password: str = "secret") -> Path:
    """A PDF that opens only with a password (the standard security handler, revision 2: RC4 with 40-bit keys)."""
    padded = (password.encode() + _PADDING)[:32]
    owner = _rc4(hashlib.md5(padded).digest()[:5], padded)
    permissions = (-4).to_bytes(4, "little", signed=True)
    file_id = hashlib.md5(path.name.encode()).digest()
    key = hashlib.md5(padded + owner + permissions + file_id).digest()[:5]
    user = _rc4(key, _PADDING)
    objects = _text_pdf(["Confidential results that only the password holder may read."], key)
    objects.append(
        b"<< /Filter /Standard /V 1 /R 2 /O <%s> /U <%s> /P -4 >>" % (owner.hex().encode(), user.hex().encode())
    )
    trailer = b"/Encrypt %d 0 R /ID [<%s> <%s>] " % (len(objects), file_id.hex().encode(), file_id.hex().encode())
    path.write_bytes(_pdf_bytes(objects, trailer=trailer))
    return path
