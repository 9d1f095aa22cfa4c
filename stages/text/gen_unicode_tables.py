import sys, unicodedata
def ranges(pred):
    out=[]; start=None
    for cp in range(0x110000+1):
        ok = cp < 0x110000 and pred(cp)
        if ok and start is None: start=cp
        if not ok and start is not None: out.append((start,cp-1)); start=None
    return out
cat=lambda cp: unicodedata.category(chr(cp))
L=ranges(lambda cp: cat(cp).startswith('L'))
N=ranges(lambda cp: cat(cp).startswith('N'))
C=ranges(lambda cp: cat(cp).startswith('C'))
Zs=ranges(lambda cp: cat(cp)=='Zs')
SP=ranges(lambda cp: chr(cp).isspace())
# lowercase: cp -> single cp (multi-char ones listed separately)
low=[]; multi=[]
for cp in range(0x110000):
    l=chr(cp).lower()
    if l==chr(cp): continue
    if len(l)==1: low.append((cp,ord(l)))
    else: multi.append((cp,l))
# compress into runs with constant delta and stride 1 or 2
runs=[]
i=0
while i<len(low):
    cp,lc=low[i]; d=lc-cp; j=i+1; stride=None
    while j<len(low):
        ncp,nlc=low[j]
        s=ncp-low[j-1][0]
        if nlc-ncp!=d: break
        if stride is None:
            if s in (1,2): stride=s
            else: break
        elif s!=stride: break
        j+=1
    runs.append((cp,low[j-1][0],stride or 1,d)); i=j
def emit(name, rs):
    s=f"const CodeRange {name}[] = {{\n"
    line=""
    for a,b in rs:
        item=f"{{0x{a:X}, 0x{b:X}}}, "
        if len(line)+len(item)>110: s+="    "+line.rstrip()+"\n"; line=""
        line+=item
    s+="    "+line.rstrip()+"\n};\n"
    return s
out=["// GENERATED from Python %s's unicodedata (Unicode %s) by stages/text/gen_unicode_tables.py\n// (run it from stages/text/). Do not edit by hand.\n" % (sys.version.split()[0], unicodedata.unidata_version),
     '#include "stages/text/unicode_tables.hpp"\n\nnamespace stagecraft::unicode {\nnamespace {\n']
out.append(emit("kLetter",L)); out.append(emit("kNumber",N)); out.append(emit("kOther",C)); out.append(emit("kSpaceSeparator",Zs)); out.append(emit("kPySpace",SP))
s="const LowerRun kLower[] = {\n"; line=""
for a,b,st,d in runs:
    item=f"{{0x{a:X}, 0x{b:X}, {st}, {d}}}, "
    if len(line)+len(item)>110: s+="    "+line.rstrip()+"\n"; line=""
    line+=item
s+="    "+line.rstrip()+"\n};\n"
out.append(s)
out.append("""
template <size_t N>
bool in_ranges(const CodeRange (&table)[N], char32_t cp) {
  size_t lo = 0, hi = N;
  while (lo < hi) {
    size_t mid = (lo + hi) / 2;
    if (cp < table[mid].first) hi = mid;
    else if (cp > table[mid].last) lo = mid + 1;
    else return true;
  }
  return false;
}

}  // namespace

bool is_letter(char32_t cp) { return in_ranges(kLetter, cp); }
bool is_number(char32_t cp) { return in_ranges(kNumber, cp); }
bool is_other(char32_t cp) { return in_ranges(kOther, cp); }
bool is_space_separator(char32_t cp) { return in_ranges(kSpaceSeparator, cp); }
bool is_python_space(char32_t cp) { return in_ranges(kPySpace, cp); }

std::u32string to_lower(char32_t cp) {
""")
for cp,l in multi:
    out.append("  if (cp == 0x%X) return U\"%s\";\n" % (cp, "".join("\\U%08X"%ord(c) for c in l)))
out.append("""  size_t lo = 0, hi = sizeof(kLower) / sizeof(kLower[0]);
  while (lo < hi) {
    size_t mid = (lo + hi) / 2;
    const LowerRun& r = kLower[mid];
    if (cp < r.first) hi = mid;
    else if (cp > r.last) lo = mid + 1;
    else return std::u32string(1, (cp - r.first) % r.stride == 0 ? char32_t(int32_t(cp) + r.delta) : cp);
  }
  return std::u32string(1, cp);
}

}  // namespace stagecraft::unicode
""")
open("unicode_tables.cpp","w").write("".join(out))
print(len(L),len(N),len(C),len(Zs),len(SP),len(runs),multi)
