//! The scoring methods (TracIn variants and the TRAK-style score) and their defaults.

/// Dominant directions of the logged sketches that the default TracIn
/// projects out ([`Method::TracIn`] `common`).
pub const DEFAULT_COMMON_DIRECTIONS: usize = 2;

/// Default relative damping of the TRAK-style score.
pub const DEFAULT_TRAK_LAMBDA: f64 = 0.1;

/// The scoring method.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Method {
    /// Learning-rate-weighted gradient dot products at the nearest
    /// recorded checkpoint.
    TracIn {
        /// Unit-normalise each example's routed sketch and each query
        /// gradient (cosine similarity).
        unit: bool,
        /// Divide each example sketch coordinate by its root mean square
        /// over the logged examples (routed ones), as Adam divides the
        /// update by `√v`: the score then follows the applied update, not
        /// the raw gradient. Needs
        /// [`Preconditioner::fit_adam`](super::Preconditioner::fit_adam).
        adam: bool,
        /// With `unit`: normalise the query over the pieces each example
        /// was routed to (the cosine within the subspace the example could
        /// reach), not over all pieces. Without it an example routed to
        /// few pieces scores at most `‖q_routed‖ / ‖q‖`, so restricted
        /// sources rank low whatever their content.
        routed: bool,
        /// With `unit`: project the `common` dominant directions of the
        /// logged examples' unit sketches out of the query and of every
        /// example before the cosine (needs
        /// [`Preconditioner::fit_common`](super::Preconditioner::fit_common)).
        /// Directions shared by most examples (generic next-token
        /// gradients, the shared format of similar texts) say little about
        /// which example a query comes from; 0: none.
        common: usize,
    },
    /// Final-model query gradient preconditioned by the damped inverse
    /// Gram matrix of the logged sketches (block-diagonal).
    Trak {
        /// Damping relative to the mean eigenvalue of each block's Gram
        /// matrix (must be positive).
        lambda: f64,
        /// Unit-normalise each example's routed sketch (in the Gram
        /// matrix and in the score) and the query gradient.
        unit: bool,
    },
}

impl Method {
    /// The default TracIn: cosine within each example's routed pieces,
    /// with the [`DEFAULT_COMMON_DIRECTIONS`] dominant directions of the
    /// logged sketches projected out (needs
    /// [`Preconditioner::fit_common`](super::Preconditioner::fit_common)).
    pub fn tracin() -> Self {
        Method::TracIn {
            unit: true,
            adam: false,
            routed: true,
            common: DEFAULT_COMMON_DIRECTIONS,
        }
    }

    /// TracIn with unit-normalised gradients over all pieces (plain cosine,
    /// the default before the routed and common-direction corrections).
    pub fn tracin_cosine() -> Self {
        Method::TracIn {
            unit: true,
            adam: false,
            routed: false,
            common: 0,
        }
    }

    /// TracIn with Adam-normalised, unit-normalised example sketches
    /// (needs [`Preconditioner::fit_adam`](super::Preconditioner::fit_adam)).
    pub fn tracin_adam() -> Self {
        Method::TracIn {
            unit: true,
            adam: true,
            routed: false,
            common: 0,
        }
    }

    /// TRAK with [`DEFAULT_TRAK_LAMBDA`] and unit-normalised gradients
    /// (the default).
    pub fn trak() -> Self {
        Method::Trak {
            lambda: DEFAULT_TRAK_LAMBDA,
            unit: true,
        }
    }

    /// The methods a trace can be asked for by name, the default first.
    pub fn selectable() -> [Method; 4] {
        [
            Method::tracin(),
            Method::tracin_cosine(),
            Method::tracin_adam(),
            Method::trak(),
        ]
    }

    /// A selectable method by its [`Method::name`].
    pub fn by_name(name: &str) -> Option<Method> {
        Method::selectable().into_iter().find(|m| m.name() == name)
    }

    /// Short name (`tracin`, `tracin-adam`, `tracin-routed-common`, ...,
    /// `tracin-adam-dot`, `tracin-raw`, `trak`, `trak-raw`).
    pub fn name(&self) -> &'static str {
        match *self {
            Method::TracIn {
                unit: false,
                adam: true,
                ..
            } => "tracin-adam-dot",
            Method::TracIn {
                unit: false,
                adam: false,
                ..
            } => "tracin-raw",
            Method::TracIn {
                adam, routed, common, ..
            } => match (adam, routed, common > 0) {
                (false, false, false) => "tracin",
                (true, false, false) => "tracin-adam",
                (false, true, false) => "tracin-routed",
                (true, true, false) => "tracin-adam-routed",
                (false, false, true) => "tracin-common",
                (true, false, true) => "tracin-adam-common",
                (false, true, true) => "tracin-routed-common",
                (true, true, true) => "tracin-adam-routed-common",
            },
            Method::Trak { unit: true, .. } => "trak",
            Method::Trak { unit: false, .. } => "trak-raw",
        }
    }

    pub(super) fn unit(&self) -> bool {
        match self {
            Method::TracIn { unit, .. } | Method::Trak { unit, .. } => *unit,
        }
    }

    pub(super) fn adam(&self) -> bool {
        matches!(self, Method::TracIn { adam: true, .. })
    }

    pub(super) fn common(&self) -> usize {
        match self {
            Method::TracIn {
                unit: true, common, ..
            } => *common,
            _ => 0,
        }
    }

    pub(super) fn routed(&self) -> bool {
        matches!(
            self,
            Method::TracIn {
                unit: true,
                routed: true,
                ..
            }
        )
    }
}
