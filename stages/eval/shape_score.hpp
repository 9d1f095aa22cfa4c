#pragma once
// A model-free judge of images of the "shapes" grammar: does the picture show the
// colour, shape, position and background its caption asks for? It is the C++ port
// of tools/score_shapes.py (same palette, thresholds and tie-breaking), so that
// `stagecraft eval` and the Python scorer agree image for image:
//
//  1. every pixel gets the nearest of the 8 palette colours (squared RGB distance,
//     the first colour on a tie, as numpy's argmin);
//  2. background = the most common label on the 1-pixel border ring;
//  3. shape mask = pixels labelled other than the background AND farther than 80
//     from the background colour (anti-aliased edges do not count); no mask pixel
//     means nothing was drawn: colour, shape and position are then all wrong;
//  4. shape colour = the most common label in the mask; the object is the mask's
//     pixels of that label;
//  5. position = the nearest of the five anchors to the object's centroid
//     (pixel centres at (i + 0.5) / size);
//  6. shape from fill = area / bounding-box area: > 0.88 square, >= 0.64 circle,
//     else triangle (ideal 1.0, pi/4, 0.5).
//
//   ShapesCaption want = parse_shapes_caption("a red circle in the center on a blue background");
//   ShapeScore s = score_shapes_image(read_png("x.png"), want);
//   if (s.colour_adherent() && s.shape_ok) ...;      // s.found says what was seen
#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "core/tensor.hpp"

namespace stagecraft {

/// One named palette colour of the data set (tools/shapes_dataset.py COLOURS, same order).
struct PaletteColour {
  const char* name;
  std::array<int, 3> rgb;
};
/// red, green, blue, yellow, white, black, purple, orange.
const std::vector<PaletteColour>& shapes_palette();
/// circle, square, triangle.
const std::vector<std::string>& shapes_shapes();
/// center, top left, top right, bottom left, bottom right (the anchors' order breaks ties).
const std::vector<std::string>& shapes_positions();
/// Anchor of a position as fractions of the side (x, y); Error(invalid_argument) for other names.
std::array<double, 2> shapes_position_xy(const std::string& position);

/// What a caption asks for; parts the caption leaves out are empty and are not scored.
struct ShapesCaption {
  std::string colour, shape;
  std::optional<std::string> position, background;
};

/// Parses `a {colour} {shape}[ in the {position}][ on a {colour} background]` (case and
/// runs of white space ignored). Anything else is Error(invalid_argument) naming the
/// word that broke the grammar and listing what was expected there.
ShapesCaption parse_shapes_caption(const std::string& text);

/// What an image shows. colour/shape/position are empty when no shape was found.
struct ShapeAnalysis {
  std::string background;
  std::optional<std::string> colour, shape, position;
  double fill = 0;            ///< object area / bounding-box area
  double cx = 0, cy = 0;      ///< object centroid as fractions of width / height
  int64_t area = 0;           ///< object pixels
};

/// Analyses an RGB image: u8 [H, W, 3] or [1, H, W, 3] on the CPU, H, W >= 2.
ShapeAnalysis analyse_shapes_image(const Tensor& rgb);

/// The verdict on one image for one caption.
struct ShapeScore {
  bool colour_ok = false;                   ///< shape colour right
  bool shape_ok = false;
  std::optional<bool> position_ok;          ///< only when the caption names a position
  std::optional<bool> background_ok;        ///< only when the caption names a background
  ShapeAnalysis found;
  /// Colour adherence: the shape colour and, when named, the background colour are right.
  bool colour_adherent() const { return colour_ok && background_ok.value_or(true); }
  /// Every part the caption names is right (score_shapes.py's all_ok).
  bool all_ok() const { return colour_adherent() && shape_ok && position_ok.value_or(true); }
};

ShapeScore score_shapes_image(const Tensor& rgb, const ShapesCaption& caption);

/// Adherence over a set of scored images, as fractions in [0, 1] (n = 0 gives zeros).
struct ShapeScoreSummary {
  int n = 0;
  double colour = 0, background = 0, shape = 0, position = 0;  ///< per part, over the images naming it
  double colour_adherence = 0;  ///< colour_adherent() over all images
  double shape_adherence = 0;   ///< shape_ok over all images
  double overall = 0;           ///< all_ok() over all images
  int background_n = 0, position_n = 0;  ///< how many images named a background / position
};
ShapeScoreSummary summarize_shape_scores(const std::vector<ShapeScore>& scores);

}  // namespace stagecraft
