//! Kubernetes label rules: validation of keys, values and names, and label selectors.
