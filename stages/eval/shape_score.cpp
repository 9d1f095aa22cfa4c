// The shapes scorer: see shape_score.hpp. Every decision mirrors tools/score_shapes.py;
// where numpy picks the first of equal candidates (argmax, argmin, min) so does this.
#include "stages/eval/shape_score.hpp"

#include <algorithm>
#include <cctype>
#include <limits>
#include <sstream>

#include "core/error.hpp"

namespace stagecraft {
namespace {

// score_shapes.py MASK_MIN_DIST2, SQUARE_FILL, CIRCLE_FILL.
constexpr int kMaskMinDist2 = 80 * 80;
constexpr double kSquareFill = 0.88;
constexpr double kCircleFill = 0.64;

std::string join(const std::vector<std::string>& v, const char* sep) {
  std::string s;
  for (size_t i = 0; i < v.size(); ++i) s += (i ? sep : "") + v[i];
  return s;
}

std::vector<std::string> colour_names() {
  std::vector<std::string> n;
  for (const auto& c : shapes_palette()) n.push_back(c.name);
  return n;
}

bool contains(const std::vector<std::string>& v, const std::string& s) {
  return std::find(v.begin(), v.end(), s) != v.end();
}

// Argmax over counts with the first index winning ties (numpy's argmax).
int first_argmax(const std::array<int64_t, 8>& counts) {
  int best = 0;
  for (int i = 1; i < 8; ++i)
    if (counts[i] > counts[best]) best = i;
  return best;
}

}  // namespace

const std::vector<PaletteColour>& shapes_palette() {
  static const std::vector<PaletteColour> p = {
      {"red", {220, 30, 30}},     {"green", {30, 170, 50}},  {"blue", {30, 60, 220}},   {"yellow", {240, 220, 30}},
      {"white", {245, 245, 245}}, {"black", {15, 15, 15}},   {"purple", {140, 40, 180}}, {"orange", {250, 140, 20}},
  };
  return p;
}

const std::vector<std::string>& shapes_shapes() {
  static const std::vector<std::string> s = {"circle", "square", "triangle"};
  return s;
}

const std::vector<std::string>& shapes_positions() {
  static const std::vector<std::string> p = {"center", "top left", "top right", "bottom left", "bottom right"};
  return p;
}

std::array<double, 2> shapes_position_xy(const std::string& position) {
  static const std::array<double, 2> xy[] = {{0.5, 0.5}, {0.27, 0.27}, {0.73, 0.27}, {0.27, 0.73}, {0.73, 0.73}};
  const auto& names = shapes_positions();
  const auto it = std::find(names.begin(), names.end(), position);
  SC_CHECK(it != names.end(), Errc::invalid_argument,
           "unknown position '" << position << "'; use one of: " << join(names, ", "));
  return xy[it - names.begin()];
}

ShapesCaption parse_shapes_caption(const std::string& text) {
  std::vector<std::string> w;
  {
    std::string lower(text);
    std::transform(lower.begin(), lower.end(), lower.begin(), [](unsigned char c) { return std::tolower(c); });
    std::istringstream is(lower);
    for (std::string t; is >> t;) w.push_back(t);
  }
  const std::string grammar = "a {colour} {shape}[ in the {position}][ on a {colour} background]";
  const auto colours = colour_names();
  size_t i = 0;
  // Fails naming the word at i (or the end) and what the grammar wanted there.
  auto expect = [&](bool ok, const std::string& wanted) {
    if (ok) return;
    SC_FAIL(Errc::invalid_argument, "caption '" << text << "' is outside the shapes grammar '" << grammar
                                                << "': expected " << wanted << " at word " << i + 1 << ", found "
                                                << (i < w.size() ? "'" + w[i] + "'" : std::string("the end")));
  };
  auto word = [&](size_t k) { return k < w.size() ? w[k] : std::string(); };

  ShapesCaption c;
  expect(word(i) == "a", "'a'");
  ++i;
  expect(contains(colours, word(i)), "a colour (" + join(colours, ", ") + ")");
  c.colour = w[i++];
  expect(contains(shapes_shapes(), word(i)), "a shape (" + join(shapes_shapes(), ", ") + ")");
  c.shape = w[i++];
  if (word(i) == "in") {
    ++i;
    expect(word(i) == "the", "'the'");
    ++i;
    // Two-word positions first so "top left" is not read as an unknown "top".
    std::string pos;
    for (const auto& p : shapes_positions())
      if (p.find(' ') != std::string::npos ? word(i) + " " + word(i + 1) == p : word(i) == p) pos = p;
    expect(!pos.empty(), "a position (" + join(shapes_positions(), ", ") + ")");
    i += pos.find(' ') != std::string::npos ? 2 : 1;
    c.position = pos;
  }
  if (word(i) == "on") {
    ++i;
    expect(word(i) == "a", "'a'");
    ++i;
    expect(contains(colours, word(i)), "a background colour (" + join(colours, ", ") + ")");
    c.background = w[i++];
    expect(word(i) == "background", "'background'");
    ++i;
  }
  expect(i == w.size(), c.background ? std::string("the end of the caption")
                                     : c.position ? std::string("'on a {colour} background' or the end")
                                                  : std::string("'in the {position}', 'on a {colour} background' or the end"));
  return c;
}

ShapeAnalysis analyse_shapes_image(const Tensor& rgb_in) {
  Tensor rgb = rgb_in.ndim() == 4 && rgb_in.size(0) == 1 ? rgb_in.select(0, 0) : rgb_in;
  SC_CHECK(rgb.dtype() == DType::u8 && rgb.ndim() == 3 && rgb.size(2) == 3, Errc::shape_mismatch,
           "the shapes scorer wants an RGB image u8 [H, W, 3] (or [1, H, W, 3]), got " << dtype_name(rgb.dtype())
                                                                                     << " " << shape_str(rgb.shape()));
  SC_CHECK(rgb.device().is_cpu(), Errc::invalid_argument, "the shapes scorer reads host memory; copy the image to the CPU first");
  const int64_t h = rgb.size(0), w = rgb.size(1);
  SC_CHECK(h >= 2 && w >= 2, Errc::shape_mismatch, "the shapes scorer needs an image of at least 2x2, got " << h << "x" << w);
  rgb = rgb.contiguous();
  const uint8_t* px = rgb.data_as<uint8_t>();
  const auto& pal = shapes_palette();

  // Squared distances are integers below 2^24, so float32 numpy and int here agree exactly.
  std::vector<uint8_t> labels(h * w);
  for (int64_t n = 0; n < h * w; ++n) {
    int best = 0, best_d = std::numeric_limits<int>::max();
    for (int k = 0; k < 8; ++k) {
      int d = 0;
      for (int ch = 0; ch < 3; ++ch) {
        const int e = int(px[n * 3 + ch]) - pal[k].rgb[ch];
        d += e * e;
      }
      if (d < best_d) best_d = d, best = k;
    }
    labels[n] = static_cast<uint8_t>(best);
  }

  std::array<int64_t, 8> border{};
  for (int64_t x = 0; x < w; ++x) ++border[labels[x]], ++border[labels[(h - 1) * w + x]];
  for (int64_t y = 1; y + 1 < h; ++y) ++border[labels[y * w]], ++border[labels[y * w + w - 1]];
  const int bg = first_argmax(border);

  ShapeAnalysis out;
  out.background = pal[bg].name;
  std::vector<bool> mask(h * w, false);
  std::array<int64_t, 8> inside{};
  int64_t mask_n = 0;
  for (int64_t n = 0; n < h * w; ++n) {
    int d = 0;
    for (int ch = 0; ch < 3; ++ch) {
      const int e = int(px[n * 3 + ch]) - pal[bg].rgb[ch];
      d += e * e;
    }
    if (labels[n] != bg && d > kMaskMinDist2) {
      mask[n] = true;
      ++inside[labels[n]];
      ++mask_n;
    }
  }
  if (mask_n == 0) return out;

  const int fg = first_argmax(inside);
  int64_t area = 0, sx = 0, sy = 0, x0 = w, x1 = -1, y0 = h, y1 = -1;
  for (int64_t y = 0; y < h; ++y)
    for (int64_t x = 0; x < w; ++x) {
      const int64_t n = y * w + x;
      if (!mask[n] || labels[n] != fg) continue;
      ++area, sx += x, sy += y;
      x0 = std::min(x0, x), x1 = std::max(x1, x), y0 = std::min(y0, y), y1 = std::max(y1, y);
    }
  out.colour = pal[fg].name;
  out.area = area;
  out.cx = (double(sx) / double(area) + 0.5) / double(w);
  out.cy = (double(sy) / double(area) + 0.5) / double(h);
  double best = std::numeric_limits<double>::infinity();
  for (const auto& p : shapes_positions()) {
    const auto xy = shapes_position_xy(p);
    const double d = (xy[0] - out.cx) * (xy[0] - out.cx) + (xy[1] - out.cy) * (xy[1] - out.cy);
    if (d < best) best = d, out.position = p;
  }
  out.fill = double(area) / double((x1 - x0 + 1) * (y1 - y0 + 1));
  out.shape = out.fill > kSquareFill ? "square" : out.fill >= kCircleFill ? "circle" : "triangle";
  return out;
}

ShapeScore score_shapes_image(const Tensor& rgb, const ShapesCaption& caption) {
  ShapeScore s;
  s.found = analyse_shapes_image(rgb);
  s.colour_ok = s.found.colour == caption.colour;
  s.shape_ok = s.found.shape == caption.shape;
  if (caption.position) s.position_ok = s.found.position == caption.position;
  if (caption.background) s.background_ok = s.found.background == *caption.background;
  return s;
}

ShapeScoreSummary summarize_shape_scores(const std::vector<ShapeScore>& scores) {
  ShapeScoreSummary m;
  m.n = static_cast<int>(scores.size());
  if (scores.empty()) return m;
  int colour = 0, shape = 0, bg = 0, pos = 0, cadh = 0, all = 0;
  for (const auto& s : scores) {
    colour += s.colour_ok, shape += s.shape_ok, cadh += s.colour_adherent(), all += s.all_ok();
    if (s.background_ok) ++m.background_n, bg += *s.background_ok;
    if (s.position_ok) ++m.position_n, pos += *s.position_ok;
  }
  const double n = m.n;
  m.colour = colour / n;
  m.shape = shape / n;
  m.colour_adherence = cadh / n;
  m.shape_adherence = shape / n;
  m.overall = all / n;
  m.background = m.background_n ? double(bg) / m.background_n : 0.0;
  m.position = m.position_n ? double(pos) / m.position_n : 0.0;
  return m;
}

}  // namespace stagecraft
